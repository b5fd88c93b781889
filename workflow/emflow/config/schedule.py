"""Checkpoint schedules resolved before anything runs, so a dry run lists every job.

The trainer uses the same functions, so it saves exactly the steps the DAG expects (and the denser steps the adapter
geometry reads, which no other job does).
"""

from __future__ import annotations

import math

from emflow.errors import user_error


def total_steps(train_rows: int, batch_size: int, grad_accum: int, epochs: int, world_size: int = 1) -> int:
    """Optimizer steps of a run: every epoch sees all rows; a last partial accumulation still steps."""
    micro_batches = math.ceil(train_rows / (batch_size * world_size))
    return epochs * math.ceil(micro_batches / grad_accum)


def resolve_steps(schedule: dict, steps_total: int, steps_per_epoch: int, source: str = "config") -> list[int]:
    """Sorted unique checkpoint steps from ``{"steps": [100, "final"]}`` and/or
    ``{"epoch_fractions": [[1, [0.25, 0.5, 0.75, 1.0]], ...]}`` / ``{"per_epoch": true}``.

    ``final`` resolves to ``steps_total``, and the final step is always saved: every run trains to its end, and
    the final EM adapter is the one the study reports. Steps beyond the run are an error, not silently dropped.
    """
    out: set[int] = set()
    for s in schedule.get("steps", []):
        if s == "final":
            out.add(steps_total)
        elif isinstance(s, int) and 0 < s <= steps_total:
            out.add(s)
        else:
            raise user_error(
                source,
                "training.checkpoints.steps",
                f"step {s!r} is outside 1..{steps_total} (the run's last step)",
                f"use steps up to {steps_total} or 'final'",
            )
    for epoch, fractions in schedule.get("epoch_fractions", []):
        for f in fractions:
            out.add(max(1, min(steps_total, round((epoch - 1 + f) * steps_per_epoch))))
    if schedule.get("per_epoch"):
        epochs = math.ceil(steps_total / steps_per_epoch)
        out.update(min(steps_total, e * steps_per_epoch) for e in range(1, epochs + 1))
    out.add(steps_total)
    return sorted(out)


def analysis_steps(every: int | None, steps_total: int, checkpoint_steps: list[int]) -> list[int]:
    """Steps that save the EM adapter for the adapter geometry only (``checkpoints.analysis_every``): every
    ``every``-th step up to the run's end, less the checkpoint steps, which are saved (and evaluated) anyway.

    These steps are never generated or judged, so they add no jobs; the geometry reads them with the checkpoints.
    """
    if not every:
        return []
    return sorted(set(range(every, steps_total + 1, every)) - set(checkpoint_steps))
