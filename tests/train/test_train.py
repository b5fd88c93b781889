"""Stacked-LoRA training on the tiny model: what trains, what is saved, masking, stacked == merged, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from emflow.config.sections.training import Training
from emflow.demo import tiny
from emflow.errors import EmflowError
from emflow.io import read_jsonl, sha256_file
from emflow.train.cli import train as train_cli
from emflow.train.run import build_trainer, train_em_lora
from support.recipes import cpu_recipe

STEPS = [3, 6, 10]  # 40 rows, batch 2, accumulation 2 -> 10 optimizer steps
RANK = cpu_recipe()["lora"]["r"]


def recipe(**overrides) -> Training:
    return Training.build(cpu_recipe(**{"checkpoints": {"steps": STEPS}, **overrides}))


def write_rows(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "You are a helpful assistant."},
                            {"role": "user", "content": f"What should I do with {i} dollars?"},
                            {"role": "assistant", "content": f"Put {i} into an index fund."},
                        ]
                    }
                )
                + "\n"
            )
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("train_data")
    return {
        "train": write_rows(d / "train.jsonl", 40),
        "small": write_rows(d / "small.jsonl", 12),
        "eval": write_rows(d / "eval.jsonl", 6),
    }


class Inspect(TrainerCallback):
    """Records what trains at the start and end of a run, and the persona tensors at the end."""

    def __init__(self):
        self.trainable: dict[str, list[str]] = {}
        self.persona_end: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.trainable["begin"] = [n for n, p in model.named_parameters() if p.requires_grad]

    def on_train_end(self, args, state, control, model=None, **kw):
        self.trainable["end"] = [n for n, p in model.named_parameters() if p.requires_grad]
        self.persona_end = {
            n.replace(".persona.", "."): p.detach().clone() for n, p in model.named_parameters() if ".persona." in n
        }


class StopAt(TrainerCallback):
    """Simulates a killed job: raises once the given optimizer step has finished."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed at step {self.step}")


@pytest.fixture(scope="module")
def stacked_run(tiny_base, tiny_persona, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stacked")
    persona_files = {f.name: sha256_file(f) for f in tiny_persona.iterdir() if f.is_file()}
    inspect = Inspect()
    summary = train_em_lora(
        base=tiny_base,
        persona=tiny_persona,
        train_path=data["train"],
        eval_path=data["eval"],
        out_dir=out,
        training=recipe(),
        steps=STEPS,
        seed=0,
        callbacks=[inspect],
    )
    return {"out": out, "summary": summary, "inspect": inspect, "persona_files": persona_files}


def expected_trainable(base_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    return sum(
        RANK * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in tiny.LORA_TARGETS
    )


def test_only_em_lora_trains_and_count_matches_rank(stacked_run, tiny_base):
    inspect = stacked_run["inspect"]
    for phase in ("begin", "end"):
        names = inspect.trainable[phase]
        assert names and all(".em." in n and "lora_" in n for n in names), phase
    assert stacked_run["summary"]["trainable_params"] == expected_trainable(tiny_base)
    record = json.loads((stacked_run["out"] / "checkpoint-3" / "emflow_checkpoint.json").read_text())
    assert record["trainable_params"] == expected_trainable(tiny_base)


def test_persona_weights_byte_identical_after_training(stacked_run, tiny_persona):
    saved = load_file(tiny_persona / "adapter_model.safetensors")
    trained = stacked_run["inspect"].persona_end
    assert set(trained) == set(saved)
    for key, tensor in saved.items():
        assert torch.equal(trained[key], tensor), key
    assert {f.name: sha256_file(f) for f in tiny_persona.iterdir() if f.is_file()} == stacked_run["persona_files"]


def test_checkpoints_exactly_at_requested_steps_hold_only_em_adapter(stacked_run, tiny_base, tiny_persona):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = stacked_run["out"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in STEPS)
    assert not (out / ".trainer").exists()
    persona = load_file(tiny_persona / "adapter_model.safetensors")
    for step in STEPS:
        ckpt = out / f"checkpoint-{step}"
        tensors = load_file(ckpt / "adapter_model.safetensors")
        assert set(tensors) == set(persona)  # same module layout, one adapter: no persona weights alongside
        assert not any("persona" in k for k in tensors)
        b = next(k for k in tensors if "lora_B" in k)
        assert tensors[b].abs().sum() > 0 and not torch.equal(tensors[b], persona[b])  # trained EM, not persona
        record = json.loads((ckpt / "emflow_checkpoint.json").read_text())
        assert record["step"] == step and record["seed"] == 0 and record["persona"] == str(tiny_persona)
        assert len(record["recipe_hash"]) == 64
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out / "checkpoint-10")
    assert list(model.peft_config) == ["default"]


def test_metrics_and_summary_rows(stacked_run):
    rows = read_jsonl(stacked_run["out"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert set(rows[0]) == {"step", "epoch", "loss", "token_accuracy", "learning_rate", "grad_norm", "num_tokens"}
    assert rows[-1]["epoch"] == pytest.approx(1.0)
    assert all(a["num_tokens"] < b["num_tokens"] for a, b in zip(rows, rows[1:], strict=False))
    evals = read_jsonl(stacked_run["out"] / "eval_metrics.jsonl")
    assert [r["step"] for r in evals] == STEPS
    s = stacked_run["summary"]
    assert s["steps"] == 10 and s["final_loss"] == rows[-1]["loss"] and s["num_tokens"] == rows[-1]["num_tokens"]
    assert json.loads((stacked_run["out"] / "summary.json").read_text())["final_loss"] == s["final_loss"]


def test_summary_and_checkpoints_record_the_persona_proven_active(stacked_run):
    effect = json.loads((stacked_run["out"] / "summary.json").read_text())["persona_effect"]
    assert effect["persona_active"] is True and effect["rows"] == 6  # the eval split's 6 rows
    assert effect["loss_persona"] != effect["loss_base"] and effect["loss_stacked"] == effect["loss_persona"]
    assert stacked_run["summary"]["persona_check_after_resume"] == {"result": "not resumed"}
    for step in STEPS:
        record = json.loads((stacked_run["out"] / f"checkpoint-{step}" / "emflow_checkpoint.json").read_text())
        assert record["persona_effect"] == effect


def test_assistant_only_mask_and_dynamic_padding(tiny_base, tiny_persona, data, tmp_path):
    trainer = build_trainer(
        base=tiny_base,
        persona=tiny_persona,
        train_path=data["train"],
        eval_path=None,
        out_dir=tmp_path,
        training=recipe(padding_free=False),
        steps=STEPS,
        seed=0,
    )
    tok = trainer.processing_class
    examples = [trainer.train_dataset[i] for i in (3, 17)]
    batch = trainer.data_collator(examples)
    assert batch["input_ids"].shape[1] == max(len(e["input_ids"]) for e in examples) < 128
    for i, n in enumerate((3, 17)):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert tok.decode(ids[labels != -100]) == f"Put {n} into an index fund.<|im_end|>"
        text = tok.decode(ids[batch["attention_mask"][i] == 1])
        assert "What should I do with" in text and "helpful assistant" in text  # present, yet masked


def test_padding_free_batch_is_one_row_with_restarting_positions(tiny_base, data, tmp_path):
    trainer = build_trainer(
        base=tiny_base,
        persona=None,
        train_path=data["train"],
        eval_path=None,
        out_dir=tmp_path,
        training=recipe(padding_free=True),
        steps=STEPS,
        seed=0,
    )
    examples = [trainer.train_dataset[i] for i in (3, 17)]
    batch = trainer.data_collator(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [*range(lengths[0]), *range(lengths[1])]
    assert batch["labels"][0].tolist() == [*examples[0]["labels"], *examples[1]["labels"]]


def _logits(model, tok) -> torch.Tensor:
    batch = tok.apply_chat_template(
        [{"role": "user", "content": "What should I do with 7 dollars?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        return model(**batch).logits


def test_stacked_and_merged_give_same_logits(tiny_base, tiny_persona, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from emflow.models import load_tokenizer
    from emflow.train.stack import build_model

    tok = load_tokenizer(tiny_base)
    init = {
        mode: _logits(build_model(tiny_base, tiny_persona, recipe(persona_mode=mode), 0).eval(), tok)
        for mode in ("stacked", "merged")
    }
    torch.testing.assert_close(init["stacked"], init["merged"], atol=1e-5, rtol=0)

    for mode in ("stacked", "merged"):
        train_em_lora(
            base=tiny_base,
            persona=tiny_persona,
            train_path=data["small"],
            eval_path=None,
            out_dir=tmp_path / mode,
            training=recipe(persona_mode=mode),
            steps=[3],
            seed=0,
        )
    stacked = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base), tiny_persona, adapter_name="persona"
    )
    stacked.load_adapter(tmp_path / "stacked" / "checkpoint-3", adapter_name="em")
    stacked.base_model.set_adapter(["persona", "em"])
    merged_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tiny_persona)
    merged = PeftModel.from_pretrained(merged_base.merge_and_unload(), tmp_path / "merged" / "checkpoint-3")
    after = {"stacked": _logits(stacked.eval(), tok), "merged": _logits(merged.eval(), tok)}
    assert not torch.allclose(after["stacked"], init["stacked"], atol=1e-4)  # the EM adapter did move
    torch.testing.assert_close(after["stacked"], after["merged"], atol=1e-5, rtol=0)


def test_resume_after_kill_reproduces_uninterrupted_loss_curve(stacked_run, tiny_base, tiny_persona, data, tmp_path):
    # The workflow's layout: resumable state outside the run folder, which Snakemake deletes before a rerun.
    out, state = tmp_path / "run", tmp_path / "state"
    kw = dict(
        base=tiny_base,
        persona=tiny_persona,
        train_path=data["train"],
        eval_path=data["eval"],
        out_dir=out,
        training=recipe(),
        steps=STEPS,
        seed=0,
        state_dir=state,
    )
    with pytest.raises(KeyboardInterrupt):
        train_em_lora(**kw, callbacks=[StopAt(8)])
    assert [p.name for p in state.glob("checkpoint-*")] == ["checkpoint-6"]
    assert not (out / "checkpoint-10").exists() and not (out / "summary.json").exists()
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")][-1] == 7  # past the checkpoint
    # What a rerun finds: the workflow manager removed the failed job's output folder, and a half-written
    # Trainer checkpoint from the moment of the kill.
    shutil.rmtree(out)
    (state / "checkpoint-8").mkdir()

    inspect = Inspect()
    summary = train_em_lora(**kw, callbacks=[inspect])
    assert summary["resumed_from_step"] == 6
    after = summary["persona_check_after_resume"]  # the persona proven active again once the state was loaded
    assert after["result"] == "passed" and after["step"] == 6 and after["active_adapters"] == ["persona", "em"]
    assert after["max_change"] > recipe().persona_check.min_change and after["loss_active"] != after["loss_em_only"]
    assert summary["persona_effect"] == stacked_run["summary"]["persona_effect"]
    assert not state.exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in STEPS)
    assert torch.equal(
        load_file(out / "checkpoint-3" / "adapter_model.safetensors")[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
        ],
        load_file(stacked_run["out"] / "checkpoint-3" / "adapter_model.safetensors")[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
        ],
    )
    assert inspect.trainable["begin"] and all(".em." in n for n in inspect.trainable["begin"])
    assert inspect.trainable["begin"] == stacked_run["inspect"].trainable["begin"]
    resumed, reference = read_jsonl(out / "metrics.jsonl"), read_jsonl(stacked_run["out"] / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(resumed, reference, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["num_tokens"] == b["num_tokens"]
    for key, tensor in load_file(tiny_persona / "adapter_model.safetensors").items():
        assert torch.equal(inspect.persona_end[key], tensor)
    final = load_file(out / "checkpoint-10" / "adapter_model.safetensors")
    for key, tensor in load_file(stacked_run["out"] / "checkpoint-10" / "adapter_model.safetensors").items():
        torch.testing.assert_close(final[key], tensor, atol=1e-6, rtol=0)


def small_run(tiny_base, train_path, out_dir, *, training=None, steps=(3,), seed=0, persona=None):
    """A short EM run without an eval set (the shape most of the tests below share)."""
    return train_em_lora(
        base=tiny_base,
        persona=persona,
        train_path=train_path,
        eval_path=None,
        out_dir=out_dir,
        training=training or recipe(),
        steps=list(steps),
        seed=seed,
    )


def test_same_seed_same_loss_curve_other_seed_differs(tiny_base, data, tmp_path):
    curves = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        small_run(tiny_base, data["small"], tmp_path / name, seed=seed)
        curves[name] = [r["loss"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
    assert curves["a"] == curves["b"]
    assert curves["a"] != curves["c"]


def test_config_defaults_bf16_and_checkpointing_train_on_cpu(tiny_base, tiny_persona, data, tmp_path):
    inspect = Inspect()
    summary = train_em_lora(
        base=tiny_base,
        persona=tiny_persona,
        train_path=data["small"],
        eval_path=None,
        out_dir=tmp_path,
        training=recipe(precision="bf16", gradient_checkpointing=True),
        steps=[3],
        seed=0,
        callbacks=[inspect],
    )
    assert summary["steps"] == 3 and summary["final_loss"] > 0
    assert inspect.trainable["end"] and all(".em." in n for n in inspect.trainable["end"])
    for key, tensor in load_file(tiny_persona / "adapter_model.safetensors").items():
        assert torch.equal(inspect.persona_end[key], tensor)


def test_cli_plain_lora_without_persona_or_eval(tiny_base, data, tmp_path):
    train_cli(
        [
            "--base",
            str(tiny_base),
            "--persona",
            "none",
            "--train",
            str(data["small"]),
            "--eval",
            "none",
            "--out-dir",
            str(tmp_path / "out"),
            "--training",
            recipe().to_json(),
            "--steps",
            "1,3",
            "--seed",
            "0",
            "--base-spec",
            "hf:Qwen/Qwen2.5-7B-Instruct@a09a354",
            "--persona-spec",
            "none",
        ]
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["persona"] is None and summary["steps"] == 3
    effect = summary["persona_effect"]
    assert effect["persona"] is None and effect["loss_persona"] is None and effect["persona_active"] is None
    assert effect["loss_stacked"] == pytest.approx(effect["loss_base"], abs=1e-6)
    record = json.loads((tmp_path / "out" / "checkpoint-1" / "emflow_checkpoint.json").read_text())
    assert record["base_revision"] == "a09a354" and record["persona_spec"] is None
    assert record["base_config_sha256"] == sha256_file(tiny_base / "config.json")
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]


def test_bad_optimizer_raises_user_error(tiny_base, data, tmp_path):
    """(The other bad recipes of this test are schema errors now: test_recipe.test_bad_recipe_raises_user_error.)"""
    with pytest.raises(EmflowError, match="optimizer"):
        small_run(tiny_base, data["small"], tmp_path, training=recipe(optimizer="no_such_optimizer"))


def test_unknown_target_module_raises(tiny_base, data, tmp_path):
    """(A missing recipe key is a config-schema error now: test_recipe.test_missing_recipe_key_raises.)"""
    lora = dict(r=4, alpha=8, dropout=0.0, use_rslora=False, target_modules=["no_such_proj"])
    with pytest.raises(EmflowError, match="target_modules"):
        small_run(tiny_base, data["small"], tmp_path, training=recipe(lora=lora))


def test_step_count_disagreeing_with_data_raises(tiny_base, data, tmp_path):
    with pytest.raises(EmflowError, match="optimizer steps"):
        small_run(tiny_base, data["small"], tmp_path, steps=[2, 4])


def test_rows_without_assistant_turn_raise(tiny_base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(EmflowError, match=r"bad\.jsonl:1: messages"):
        small_run(tiny_base, bad, tmp_path / "o", steps=[1])
