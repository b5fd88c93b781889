"""A persona adapter is checked against its base before training: shapes, and the base model it records."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from emflow.errors import EmflowError
from emflow.train.cli import train as train_cli
from emflow.train.persona_fit import check_persona_fit, names_other_model

QWEN = "hf:Qwen/Qwen2.5-7B-Instruct@a09a354"


def other_base_adapter(tiny_base: Path, out: Path, **shape) -> Path:
    """A persona adapter trained for another tiny base (same tokenizer, other ``shape``)."""
    from emflow.demo import tiny
    from emflow.models import load_tokenizer

    tiny.build_model(load_tokenizer(tiny_base), out / "base", **shape)
    tiny.build_lora_adapter(out / "base", out / "persona", rank=4, alpha=8, seed=2)
    return out / "persona"


@pytest.fixture(scope="module")
def narrow_persona(tiny_base, tmp_path_factory) -> Path:
    """Trained for hidden 32 / intermediate 64 (tiny_base: 64 / 128)."""
    return other_base_adapter(tiny_base, tmp_path_factory.mktemp("narrow"), hidden_size=32, intermediate_size=64)


@pytest.fixture(scope="module")
def deeper_persona(tiny_base, tmp_path_factory) -> Path:
    """Trained for three layers of tiny_base's width (tiny_base: two)."""
    return other_base_adapter(tiny_base, tmp_path_factory.mktemp("deeper"), layers=3)


def recording(persona: Path, recorded: str, tmp_path: Path) -> Path:
    """A copy of ``persona`` whose adapter_config.json records ``recorded`` as its base model."""
    out = tmp_path / "persona"
    shutil.copytree(persona, out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": recorded}))
    return out


def _error(*args, **kwargs) -> str:
    with pytest.raises(EmflowError) as err:
        check_persona_fit(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_persona_trained_on_the_base_fits(tiny_base, tiny_persona, caplog):
    with caplog.at_level(logging.INFO, logger="emflow.train.persona_fit"):
        check_persona_fit(tiny_base, tiny_persona, field="personas.sycophancy")
    assert "personas.sycophancy fits base" in caplog.text


def test_adapter_for_another_hidden_size_is_refused_naming_module_and_shapes(tiny_base, narrow_persona):
    msg = _error(tiny_base, narrow_persona, base_spec=QWEN, field="personas.sycophancy.qwen2.5-7b-it")
    assert msg.startswith(f"config.yaml: personas.sycophancy.qwen2.5-7b-it: adapter {narrow_persona} does not fit")
    assert (
        f"base {QWEN}: model.layers.0.mlp.down_proj: the adapter's lora_A is [4, 64] (in-features 64) but the"
        " base's module is 128 -> 64 (in-features 128) (and 27 more)"
    ) in msg
    assert "(fix: give this base the adapter trained for it (personas.sycophancy.<base>: <spec>))" in msg


def test_adapter_for_more_layers_names_the_module_the_base_lacks(tiny_base, deeper_persona):
    msg = _error(tiny_base, deeper_persona, field="personas.goodness")
    assert "model.layers.2.mlp.down_proj (targeted by base_model.model.model.layers.2.mlp.down_proj.lora_A" in msg
    assert "is not a module of the base" in msg


def test_recorded_other_base_is_refused_unless_marked_intended(tiny_base, tiny_persona, tmp_path, caplog):
    persona = recording(tiny_persona, "meta-llama/Llama-3.1-8B-Instruct", tmp_path)
    msg = _error(tiny_base, persona, base_spec=QWEN, field="personas.sycophancy.qwen2.5-7b-it")
    assert (
        "personas.sycophancy.qwen2.5-7b-it: the adapter was trained on meta-llama/Llama-3.1-8B-Instruct"
        f" (adapter_config.json base_model_name_or_path), not on {QWEN}"
    ) in msg
    assert "base_mismatch: intended" in msg
    with caplog.at_level(logging.WARNING, logger="emflow.train.persona_fit"):
        check_persona_fit(tiny_base, persona, base_spec=QWEN, field="personas.x.y", mismatch_intended=True)
    assert "marked intended" in caplog.text


def test_recorded_hub_id_matches_the_base_repo_case_insensitively(tiny_base, tiny_persona, tmp_path):
    persona = recording(tiny_persona, "qwen/qwen2.5-7b-instruct", tmp_path)
    check_persona_fit(tiny_base, persona, base_spec=QWEN, field="personas.sycophancy")


def test_local_base_matches_a_recorded_relative_path_as_the_demo_writes_it(tiny_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_base.parent.parent)
    relative = f"{tiny_base.parent.name}/{tiny_base.name}"  # like the demo's resources/demo/base
    assert names_other_model(relative, tiny_base, relative) is False
    assert names_other_model(str(tmp_path), tiny_base, relative) is True  # another folder here
    assert names_other_model("Qwen/Qwen2.5-7B-Instruct", tiny_base, str(tiny_base)) is True  # no hub name here


def test_recorded_names_that_cannot_or_can_be_compared(tiny_base):
    base = tiny_base  # stands in for the fetched Qwen snapshot
    cache = "/home/u/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/abc"
    assert names_other_model(cache, base, QWEN) is False
    assert names_other_model("/workspace/models/qwen-7b", base, QWEN) is None  # a path from another machine


def test_train_refuses_a_persona_for_another_base_before_loading_anything(tiny_base, narrow_persona, tmp_path):
    args = ["--base", str(tiny_base), "--persona", str(narrow_persona), "--train", str(tmp_path / "absent.jsonl")]
    args += ["--eval", "none", "--out-dir", str(tmp_path / "out"), "--training", "{}", "--steps", "3", "--seed", "0"]
    with pytest.raises(EmflowError, match=r"personas\.sycophancy\.tiny: adapter .* does not fit base"):
        train_cli([*args, "--persona-field", "personas.sycophancy.tiny", "--base-mismatch", "intended"])
    assert not (tmp_path / "out").exists()


def test_generate_refuses_it_too_since_step_0_may_run_before_training(tiny_base, narrow_persona, tmp_path):
    from emflow.generate.cli import generate as generate_cli

    out = tmp_path / "step-0.jsonl"
    args = ["--base", str(tiny_base), "--persona", str(narrow_persona), "--steps", "0", "--out", str(out)]
    args += ["--questions", str(tmp_path / "absent.yaml"), "--select", "{}", "--params", "{}", "--seed", "0"]
    with pytest.raises(EmflowError, match=r"personas\.sycophancy\.tiny: adapter .* does not fit base"):
        generate_cli([*args, "--persona-field", "personas.sycophancy.tiny"])
    assert not out.exists()
