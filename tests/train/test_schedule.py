"""Multi-epoch runs save exactly the planned sub-epoch checkpoints (and the geometry-only steps of
``checkpoints.analysis_every``, which add no evaluated step); padding-free batches train like padded ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emflow.analysis.norms import saved_adapters
from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.schedule import analysis_steps, resolve_steps, total_steps
from emflow.config.sections.training import Training
from emflow.io import read_jsonl
from emflow.layout import GEOMETRY_DIR
from emflow.train.run import train_em_lora
from support.paths import ROOT
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


def test_analysis_every_adds_dense_steps_and_leaves_the_evaluated_ones_alone():
    assert analysis_steps(4, 36, [10, 20, 36]) == [4, 8, 12, 16, 24, 28, 32]  # 20 and 36 are checkpoints anyway
    assert analysis_steps(None, 36, [10, 20, 36]) == [] and analysis_steps(50, 36, [36]) == []
    config = load_config_files([ROOT / "config.yaml", ROOT / "config/demo.yaml"])
    dense = load_experiment(config).plan()
    config["training"]["checkpoints"].pop("analysis_every")
    plain = load_experiment(config).plan()
    assert [r["steps"] for r in dense] == [r["steps"] for r in plain] == [[0, 10, 20, 36]] * 3
    assert [r["analysis_steps"] for r in dense] == [[4, 8, 12, 16, 24, 28, 32]] * 3
    assert [r["analysis_steps"] for r in plain] == [[]] * 3


def test_sub_epoch_schedule_saved_exactly_by_a_two_epoch_run(tiny_base, tiny_persona, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", 13)  # 7 micro-batches of 2 -> 4 optimizer steps per epoch
    per_epoch = total_steps(13, 2, 2, 1)
    schedule = {"epoch_fractions": [[1, [0.25, 0.5, 0.75, 1.0]]], "per_epoch": True}
    steps = resolve_steps(schedule, 2 * per_epoch, per_epoch)
    assert steps == [1, 2, 3, 4, 8]
    dense = analysis_steps(3, 2 * per_epoch, steps)
    assert dense == [6]
    out = tmp_path / "run"
    summary = train_em_lora(
        base=tiny_base,
        persona=tiny_persona,
        train_path=train,
        eval_path=None,
        out_dir=out,
        training=recipe(epochs=2, checkpoints={**schedule, "analysis_every": 3}),
        steps=steps,
        seed=0,
        analysis_steps=dense,
    )
    assert summary["steps"] == 8
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == steps
    # The geometry-only step: the adapter alone, under geometry/, with no eval row and no Trainer state.
    assert [(s, ev) for s, _, ev in saved_adapters(out)] == [(s, s in steps) for s in sorted([*steps, *dense])]
    record = json.loads((out / GEOMETRY_DIR / "checkpoint-6" / "emflow_checkpoint.json").read_text())
    assert record["step"] == 6 and record["geometry_only"] is True
    epochs = {r["step"]: r["epoch"] for r in read_jsonl(out / "metrics.jsonl")}
    assert epochs[4] == pytest.approx(1.0) and epochs[8] == pytest.approx(2.0)  # epoch boundaries where planned
    for s in steps:
        assert json.loads((out / f"checkpoint-{s}" / "emflow_checkpoint.json").read_text())["step"] == s


def test_a_resumed_run_puts_back_the_geometry_saves_made_before_the_kill(tiny_base, tiny_persona, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 7:
                raise KeyboardInterrupt("killed at step 7")

    train, out = write_rows(tmp_path / "train.jsonl", 13), tmp_path / "run"
    steps, dense = [4, 8], analysis_steps(3, 8, [4, 8])
    assert dense == [3, 6]
    kw = dict(
        base=tiny_base,
        persona=tiny_persona,
        train_path=train,
        eval_path=None,
        out_dir=out,
        training=recipe(epochs=2, checkpoints={"steps": steps, "analysis_every": 3}),
        steps=steps,
        seed=0,
        state_dir=tmp_path / "state",
        analysis_steps=dense,
    )
    with pytest.raises(KeyboardInterrupt):
        train_em_lora(**kw, callbacks=[StopAt()])
    before = load_file(out / GEOMETRY_DIR / "checkpoint-3" / "adapter_model.safetensors")
    shutil.rmtree(out)  # what Snakemake does to a failed job's output folder
    assert train_em_lora(**kw)["resumed_from_step"] == 4
    # Step 3 (before the resume point) is put back from the private copy; step 6 is saved again by the retraining.
    assert [(s, ev) for s, _, ev in saved_adapters(out)] == [(3, False), (4, True), (6, False), (8, True)]
    after = load_file(out / GEOMETRY_DIR / "checkpoint-3" / "adapter_model.safetensors")
    assert after.keys() == before.keys() and all(after[k].equal(before[k]) for k in before)


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
