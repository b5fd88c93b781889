"""Recipe -> PEFT/TRL settings, attention and 4-bit choices, the trainable-parameter count for real shapes, and
bad recipes stopped by the config schema."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from emflow.config.experiment import validate_config
from emflow.config.sections.training import Training
from emflow.demo import tiny
from emflow.errors import EmflowError
from emflow.train.recipe import lora_config, resolve_padding_free, sft_config
from emflow.train.stack import attn_implementation, lora_param_count, quantization_config
from support.paths import ROOT
from support.recipes import cpu_recipe


def recipe_dict(**overrides) -> dict:
    r = dict(
        persona_mode="stacked",
        lora=dict(r=32, alpha=64, dropout=0.05, use_rslora=True, target_modules=list(tiny.LORA_TARGETS)),
        epochs=1,
        per_device_batch_size=2,
        gradient_accumulation_steps=8,
        learning_rate=1e-5,
        lr_scheduler="cosine",
        warmup_steps=5,
        weight_decay=0.01,
        optimizer="adamw_torch",
        max_length=2048,
        precision="bf16",
        gradient_checkpointing=True,
        device="cpu",
        logging_steps=1,
        checkpoints=dict(steps=["final"]),
    )
    r.update(overrides)
    return r


def recipe(**overrides) -> Training:
    return Training.build(recipe_dict(**overrides))


def check_config_with(training: dict) -> None:
    """Validate the repository's config with ``training`` as its ``training:`` section (as the Snakefile does)."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate_config({**config, "training": training})


def qwen25_7b_config():
    from transformers import Qwen2Config

    # Qwen2.5-7B-Instruct's config.json shape (no download needed).
    return Qwen2Config(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )


def test_qwen25_7b_rank32_trains_80_7m_parameters():
    n = lora_param_count(qwen25_7b_config(), recipe())
    # per layer r * (q 2h + k h+kv + v h+kv + o 2h + 3 * (h + ffn)), h=3584, kv=512, ffn=18944; 28 layers
    assert n == 32 * 28 * (2 * 3584 + 2 * (3584 + 512) + 2 * 3584 + 3 * (3584 + 18944)) == 80_740_352


def test_every_recipe_key_reaches_peft_and_trl(tmp_path):
    r = recipe()
    lc = lora_config(r)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.use_rslora) == (32, 64, 0.05, True)
    assert set(lc.target_modules) == set(tiny.LORA_TARGETS)
    c = sft_config(resolve_padding_free(r, "flash_attention_2"), output_dir=str(tmp_path), max_steps=10, seed=7)
    assert c.lr_scheduler_type.value == "cosine" and c.warmup_steps == 5 and c.weight_decay == 0.01
    assert c.optim.value == "adamw_torch" and c.learning_rate == 1e-5 and c.bf16
    assert c.gradient_accumulation_steps == 8 and c.per_device_train_batch_size == 2 and c.seed == c.data_seed == 7
    assert c.activation_checkpointing and c.padding_free and c.max_length is None  # truncated before TRL
    padded = sft_config(recipe(padding_free=False), output_dir=str(tmp_path), max_steps=10, seed=7)
    assert not padded.padding_free and padded.max_length == 2048
    assert c.report_to in ("none", ["none"], [])


def test_auto_padding_free_packs_only_for_varlen_flash_attention():
    assert resolve_padding_free(recipe(), "flash_attention_2").padding_free is True
    assert resolve_padding_free(recipe(), "sdpa").padding_free is False
    assert resolve_padding_free(recipe(padding_free=True), "sdpa").padding_free is True  # explicit wins


def test_auto_attention_is_sdpa_without_flash_attention_on_cuda():
    assert attn_implementation(recipe(), on_cuda=False) == "sdpa"
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert attn_implementation(recipe(), on_cuda=True) == expected
    assert attn_implementation(recipe(precision="fp32"), on_cuda=True) == "sdpa"
    assert attn_implementation(recipe(attn_implementation="eager"), on_cuda=False) == "eager"


def test_flash_attention_without_cuda_is_a_user_error():
    with pytest.raises(EmflowError, match="attn_implementation"):
        attn_implementation(recipe(attn_implementation="flash_attention_2"), on_cuda=False)


def test_4bit_base_needs_cuda_bitsandbytes_and_stacked_persona():
    assert quantization_config(recipe(), on_cuda=False, persona=True) is None
    with pytest.raises(EmflowError, match="CUDA"):
        quantization_config(recipe(load_in_4bit=True), on_cuda=False, persona=False)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(EmflowError, match="bitsandbytes"):
            quantization_config(recipe(load_in_4bit=True), on_cuda=True, persona=False)
    else:
        with pytest.raises(EmflowError, match="stacked"):
            quantization_config(recipe(load_in_4bit=True, persona_mode="merged"), on_cuda=True, persona=True)


def test_wandb_modes_parse_and_missing_package_is_a_user_error(tmp_path):
    for mode in ("disabled", "offline", "online"):
        assert recipe(wandb=mode).wandb == mode
    check_config_with(recipe_dict(wandb="offline"))
    with pytest.raises(EmflowError, match="wandb"):
        check_config_with(recipe_dict(wandb="on"))
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(EmflowError, match="not installed"):
            sft_config(recipe(wandb="offline", padding_free=False), output_dir=str(tmp_path), max_steps=1, seed=0)


@pytest.mark.parametrize("key, value", [("padding_free", "yes"), ("load_in_4bit", 1), ("attn_implementation", "flash")])
def test_bad_speed_keys_are_user_errors(key, value):
    with pytest.raises(EmflowError, match=key):
        check_config_with(recipe_dict(**{key: value}))


def test_test_recipes_are_valid_config():
    check_config_with(recipe_dict())
    check_config_with(cpu_recipe(checkpoints={"steps": [3, 6, 10]}))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(learning_rate_typo=1e-3), "unknown key"),
        (
            dict(lora=dict(r=4, alpha=8, dropout=0.0, use_rslora=False, target_modules=["q_proj"], rank=4)),
            "unknown key",
        ),
        (dict(precision="fp16"), "precision"),
        (dict(per_device_batch_size=0), "per_device_batch_size"),
    ],
)
def test_bad_recipe_raises_user_error(bad, match):
    """(Moved from test_train: the schema stops these before any job runs; the optimizer name is still checked
    by TRL when the trainer is configured, see test_train.test_bad_optimizer_raises_user_error.)"""
    with pytest.raises(EmflowError, match=match):
        check_config_with(cpu_recipe(checkpoints={"steps": ["final"]}, **bad))


def test_missing_recipe_key_raises():
    r = cpu_recipe(checkpoints={"steps": ["final"]})
    del r["warmup_steps"]
    with pytest.raises(EmflowError, match=r"training\.warmup_steps: required key is missing"):
        check_config_with(r)


@pytest.mark.parametrize(
    "lora_overrides, match",
    [(dict(target_modules=[]), "target_modules"), (dict(target_modules=[""]), "target_modules")],
)
def test_lora_target_modules_must_be_module_names(lora_overrides, match):
    r = cpu_recipe(checkpoints={"steps": ["final"]})
    with pytest.raises(EmflowError, match=match):
        check_config_with({**r, "lora": {**r["lora"], **lora_overrides}})


def test_optimizer_must_be_a_name():
    with pytest.raises(EmflowError, match="optimizer"):
        check_config_with(cpu_recipe(checkpoints={"steps": ["final"]}, optimizer=""))


def test_repo_config_training_section_is_a_valid_recipe():
    """(Moved from test_train.)"""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate_config(config)
    r = Training.build(config["training"])
    assert r.lora.r == config["training"]["lora"]["r"] and r.persona_mode in ("stacked", "merged")
