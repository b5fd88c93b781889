"""The Trainer's resumable state: where it lives, whether it belongs to this run, and what a rerun starts from.

``state_dir`` (default ``out_dir/.trainer``) holds the Trainer's full checkpoints (optimizer, RNG), a private copy
of every EM checkpoint saved so far, and ``emflow_run.json``, the identity of the run that wrote them. Snakemake
clears a rule's declared output folder before rerunning a killed job, so the rule keeps this state outside it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from emflow.io import atomic_write_json
from emflow.layout import GEOMETRY_DIR, geometry_checkpoint_dir
from emflow.train.em_adapter import publish
from emflow.train.trainer import EM_COPY, GEOMETRY_COPY

log = logging.getLogger(__name__)

TRAINER_DIR = ".trainer"
RUN_RECORD = "emflow_run.json"
OUTPUTS = ("metrics.jsonl", "eval_metrics.jsonl", "summary.json")


def trainer_dir(out_dir: Path, state_dir: str | Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else out_dir / TRAINER_DIR


def resume_point(state: Path, run_id: dict) -> Path | None:
    """Latest complete Trainer checkpoint of the same run, or None (then stale state is cleared)."""
    record = state / RUN_RECORD
    if not record.is_file() or json.loads(record.read_text()) != run_id:
        if any(state.glob("checkpoint-*")):
            log.warning("discarding Trainer state in %s from a different run", state)
        shutil.rmtree(state, ignore_errors=True)
        return None
    complete = []
    for ckpt in state.glob("checkpoint-*"):
        # trainer_state.json is written last: without it the checkpoint is half-written
        if (ckpt / "trainer_state.json").is_file():
            complete.append((int(ckpt.name.split("-")[1]), ckpt))
        else:
            shutil.rmtree(ckpt, ignore_errors=True)
    return max(complete)[1] if complete else None


def start_fresh(out_dir: Path, state: Path, run_id: dict) -> None:
    """No state to resume: clear what an earlier run left in ``out_dir`` and record this run's identity."""
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for old in [*out_dir.glob("checkpoint-*"), *out_dir.glob(".checkpoint-*.tmp"), *out_dir.glob(GEOMETRY_DIR)]:
        shutil.rmtree(old)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state / RUN_RECORD, run_id)


def republish(out_dir: Path, state: Path, steps: list[int], done: int, analysis_steps: list[int] = ()) -> None:
    """Put back the EM checkpoints (and geometry-only saves) made before the kill that the workflow manager
    removed with the outputs; later ones are saved again as training continues."""
    for step in steps:
        dest = out_dir / f"checkpoint-{step}"
        if step <= done and not dest.is_dir():
            publish(state / f"{EM_COPY}-{step}", dest)
    for step in analysis_steps:
        dest = Path(geometry_checkpoint_dir(out_dir, step))
        if step <= done and not dest.is_dir():
            publish(state / f"{GEOMETRY_COPY}-{step}", dest)


def prepare(out_dir: Path, state: Path, run_id: dict, steps: list[int], analysis_steps: list[int] = ()) -> Path | None:
    """The Trainer checkpoint to resume from (its EM checkpoints back in place), or None after a fresh start."""
    resume = resume_point(state, run_id)
    if resume is None:
        start_fresh(out_dir, state, run_id)
    else:
        log.info("resuming from %s", resume)
        republish(out_dir, state, steps, step_of(resume), analysis_steps)
    return resume


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])
