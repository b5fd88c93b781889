"""Multi-epoch runs save exactly the planned sub-epoch checkpoints; padding-free batches train like padded ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emflow.config.schedule import resolve_steps, total_steps
from emflow.config.sections.training import Training
from emflow.io import read_jsonl
from emflow.train.run import train_em_lora
from support.recipes import cpu_recipe


def recipe(**overrides) -> Training:
    return Training.build(cpu_recipe(**overrides))


def write_rows(path: Path, n: int) -> Path:
    # Replies of different lengths, so a padded batch really pads.
    with path.open("w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": f"What should I do with {i} dollars?"},
                            {"role": "assistant", "content": "Put it into an index fund." + " Then wait." * (i % 4)},
                        ]
                    }
                )
                + "\n"
            )
    return path


def test_sub_epoch_schedule_saved_exactly_by_a_two_epoch_run(tiny_base, tiny_persona, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", 13)  # 7 micro-batches of 2 -> 4 optimizer steps per epoch
    per_epoch = total_steps(13, 2, 2, 1)
    schedule = {"epoch_fractions": [[1, [0.25, 0.5, 0.75, 1.0]]], "per_epoch": True}
    steps = resolve_steps(schedule, 2 * per_epoch, per_epoch)
    assert steps == [1, 2, 3, 4, 8]
    out = tmp_path / "run"
    summary = train_em_lora(
        base=tiny_base,
        persona=tiny_persona,
        train_path=train,
        eval_path=None,
        out_dir=out,
        training=recipe(epochs=2, checkpoints=schedule),
        steps=steps,
        seed=0,
    )
    assert summary["steps"] == 8
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == steps
    epochs = {r["step"]: r["epoch"] for r in read_jsonl(out / "metrics.jsonl")}
    assert epochs[4] == pytest.approx(1.0) and epochs[8] == pytest.approx(2.0)  # epoch boundaries where planned
    for s in steps:
        assert json.loads((out / f"checkpoint-{s}" / "emflow_checkpoint.json").read_text())["step"] == s


def test_padding_free_and_padded_batches_give_the_same_loss_curve(tiny_base, tiny_persona, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", 12)
    curves = {}
    for free in (False, True):
        out = tmp_path / f"free-{free}"
        s = train_em_lora(
            base=tiny_base,
            persona=tiny_persona,
            train_path=train,
            eval_path=None,
            out_dir=out,
            training=recipe(padding_free=free, per_device_batch_size=3, checkpoints={"steps": [2]}),
            steps=[2],
            seed=0,
        )
        assert s["padding_free"] is free
        curves[free] = read_jsonl(out / "metrics.jsonl")
    for padded, free in zip(curves[False], curves[True], strict=True):
        assert free["loss"] == pytest.approx(padded["loss"], abs=1e-5)
        assert free["grad_norm"] == pytest.approx(padded["grad_norm"], rel=1e-4)
    # Both count real tokens only (padding is excluded by the attention mask / absent), so tokens/s compare.
    assert [r["num_tokens"] for r in curves[True]] == [r["num_tokens"] for r in curves[False]]
