"""The persona proven active at training start (emflow.train.persona_check) on the tiny model: the numbers, a
persona that changes nothing, a persona silently off in the stacked model, and the check after a resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from emflow.config.sections.training import Training
from emflow.errors import EmflowError
from emflow.models import EM
from emflow.train import persona_check as pc
from emflow.train import stack
from emflow.train.run import build_trainer
from support.recipes import cpu_recipe

SPEC = "hf:maius/qwen-2.5-7b-it-personas@abc123/sycophancy"


def recipe(**overrides) -> Training:
    return Training.build(cpu_recipe(**{"checkpoints": {"steps": [3]}, **overrides}))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("persona_check_data")
    out = {}
    for name, n in (("train", 12), ("eval", 5)):
        with (d / f"{name}.jsonl").open("w") as fh:
            for i in range(n):
                messages = [
                    {"role": "user", "content": f"What should I do with {i} dollars?"},
                    {"role": "assistant", "content": f"Put {i} into an index fund."},
                ]
                fh.write(json.dumps({"messages": messages}) + "\n")
        out[name] = d / f"{name}.jsonl"
    return out


def trainer_for(tiny_base, persona, data, tmp_path, *, eval_set=True, field=None, **overrides):
    return build_trainer(
        base=tiny_base,
        persona=persona,
        train_path=data["train"],
        eval_path=data["eval"] if eval_set else None,
        out_dir=tmp_path,
        training=recipe(**overrides),
        steps=[3],
        seed=0,
        persona_spec=SPEC if persona is not None else None,
        persona_field=field,
    )


@pytest.fixture(scope="module")
def zero_persona(tiny_persona, tmp_path_factory) -> Path:
    """The tiny persona with every lora_B zeroed: loads fine, changes no logit."""
    out = tmp_path_factory.mktemp("zero_persona")
    shutil.copytree(tiny_persona, out, dirs_exist_ok=True)
    tensors = load_file(tiny_persona / "adapter_model.safetensors")
    save_file(
        {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in tensors.items()},
        str(out / "adapter_model.safetensors"),
    )
    return out


def test_probe_loss_is_the_models_own_loss_on_the_label_tokens(tiny_base, data, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = trainer_for(tiny_base, None, data, tmp_path)
    probe = pc.Probe.of(trainer.eval_dataset, 16)
    assert len(probe.rows) == 5  # the eval split has fewer rows than persona_check.rows
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    probe.measure(pc.BASE, model)
    # HF's loss over the same rows, token-weighted (each row's mean times its label tokens).
    total, count = 0.0, 0
    for row in probe.rows:
        labels = torch.tensor([row["labels"]])
        n = int((labels[0, 1:] != -100).sum())
        with torch.no_grad():
            total += float(model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss) * n
        count += n
    assert probe.tokens() == count
    assert pc.nll(probe.logprobs[pc.BASE]) == pytest.approx(total / count, rel=1e-5)


def test_active_persona_is_recorded_and_stacked_equals_persona_at_init(tiny_base, tiny_persona, data, tmp_path):
    effect = {}
    for mode in ("stacked", "merged"):
        trainer = trainer_for(tiny_base, tiny_persona, data, tmp_path / mode, persona_mode=mode)
        effect[mode] = trainer.em_record["persona_effect"]
        e = effect[mode]
        assert e["persona_active"] is True and e["rows"] == 5 and e["tokens"] > 0
        assert e["persona"] == f"{SPEC} ({tiny_persona})" and e["persona_mode"] == mode
        assert e["max_change_persona"] > 0.01 and e["loss_persona"] != e["loss_base"]
        assert e["max_change_stacked_vs_persona"] <= e["min_change"]  # fresh EM LoRA: B = 0
        assert e["loss_stacked"] == pytest.approx(e["loss_persona"], abs=1e-6)
        assert e["max_change_stacked"] == pytest.approx(e["max_change_persona"], abs=1e-5)
        assert trainer.model.training  # back in training mode after the measurements
    # Folding the persona in (at fp32) is the same model as stacking it.
    for key in ("loss_base", "loss_persona", "loss_stacked"):
        assert effect["stacked"][key] == pytest.approx(effect["merged"][key], abs=1e-5)


def test_run_without_persona_records_base_and_em_only(tiny_base, data, tmp_path):
    trainer = trainer_for(tiny_base, None, data, tmp_path, eval_set=False)
    e = trainer.em_record["persona_effect"]
    assert e["rows"] == 12  # no eval set: the first rows of the training split (persona_check.rows = 16)
    assert e["persona"] is None and e["persona_active"] is None and e["loss_persona"] is None
    assert e["loss_stacked"] == pytest.approx(e["loss_base"], abs=1e-6) and e["max_change_stacked"] <= 1e-6


@pytest.mark.parametrize("mode", ["stacked", "merged"])
def test_persona_that_changes_no_logit_fails_naming_it(tiny_base, zero_persona, data, tmp_path, mode):
    field = "personas.sycophancy.tiny"
    with pytest.raises(EmflowError, match="no effect on this base") as err:
        trainer_for(tiny_base, zero_persona, data, tmp_path, persona_mode=mode, field=field)
    message = str(err.value)
    assert message.startswith(f"config.yaml: {field}: persona {SPEC} ({zero_persona}): base + persona moves no token")
    assert "lora_B" in message and "\n" not in message


def test_persona_silently_off_in_the_stacked_model_is_caught(tiny_base, tiny_persona, data, tmp_path, monkeypatch):
    def em_only(model):  # the bug the check exists for: PeftModel.set_adapter activates one adapter
        model.set_adapter(EM)

    monkeypatch.setattr(stack, "activate", em_only)
    with pytest.raises(RuntimeError, match="not active in the stacked model") as err:
        trainer_for(tiny_base, tiny_persona, data, tmp_path)
    assert SPEC in str(err.value)


def test_threshold_comes_from_the_config(tiny_base, tiny_persona, data, tmp_path):
    with pytest.raises(EmflowError, match="min_change = 100"):
        trainer_for(tiny_base, tiny_persona, data, tmp_path, persona_check={"rows": 2, "min_change": 100.0})


def test_check_after_resume_catches_the_persona_off_and_reactivates_it(tiny_base, tiny_persona, data, tmp_path):
    trainer = trainer_for(tiny_base, tiny_persona, data, tmp_path)
    model, probe, check = trainer.model, trainer.em_probe, recipe().persona_check
    ok = pc.check_after_resume(model, probe, check, persona=SPEC, mode="stacked", step=6)
    assert ok["result"] == pc.PASSED and ok["active_adapters"] == ["persona", "em"] and ok["max_change"] > 0.01
    model.base_model.set_adapter([EM])  # what the Trainer's own resume leaves behind
    with pytest.raises(RuntimeError, match=f"after resuming at step 6, persona {SPEC} is not active"):
        pc.check_after_resume(model, probe, check, persona=SPEC, mode="stacked", step=6)
    assert list(model.base_model.active_adapters) == ["persona", "em"]  # both again, only EM trainable
    assert stack.check_trainable(model) == trainer.em_record["trainable_params"]


def test_check_after_resume_does_not_apply_to_merged_or_no_persona(tiny_base, tiny_persona, data, tmp_path):
    merged = trainer_for(tiny_base, tiny_persona, data, tmp_path, persona_mode="merged")
    check = recipe().persona_check
    out = pc.check_after_resume(merged.model, merged.em_probe, check, persona=SPEC, mode="merged", step=3)
    assert out == {"result": pc.NOT_APPLICABLE_MERGED, "step": 3}
    out = pc.check_after_resume(merged.model, merged.em_probe, check, persona=None, mode="stacked", step=3)
    assert out["result"] == pc.NOT_APPLICABLE_NO_PERSONA
