"""Answer every probe question × paraphrase × sample with base + persona (+ the EM checkpoint of each step).

One job answers one step or several steps of one run: the base and persona are loaded once and only the EM
adapter is swapped between steps (none at step 0). A step's file does not depend on which other steps its
job answered: every sample is seeded by (seed, step, question, paraphrase, sample), see ``sampling.py``.
Every row records the adapters active on the model that wrote it, checked against what the step must run with
(``expected_adapters``: the persona at step 0, persona and EM at a checkpoint).
"""

from __future__ import annotations

import logging
from pathlib import Path

from emflow import models
from emflow.config.sections.generation import Generation
from emflow.generate.answers import generate_rows
from emflow.io import write_jsonl
from emflow.layout import checkpoint_dir

log = logging.getLogger(__name__)


def load_prompts(questions_path: str | Path, select: dict) -> list[dict]:
    """The prompts of the resolved question set (``select``: the rule's ``{"ids": [...] | null}``)."""
    from emflow.data import questions as q

    qs = q.load_questions(
        questions_path, ids=select.get("ids"), samples_per_paraphrase=select.get("samples_per_paraphrase")
    )
    return q.iter_prompts(qs)


def checkpoint_of(run_dir: str | Path | None, step: int) -> str | None:
    """The EM adapter answering at ``step``: none at step 0 (base + persona), else the run's checkpoint."""
    if step == 0:
        return None
    if run_dir is None:
        raise ValueError(f"step {step} needs the run folder holding checkpoint-{step}")
    return checkpoint_dir(run_dir, step)


def expected_adapters(persona: str | Path | None, step: int) -> list[str]:
    """The adapters that must be active at ``step``: the persona (if any), and the EM checkpoint after step 0."""
    return ([models.PERSONA] if persona is not None else []) + ([models.EM] if step > 0 else [])


def check_adapters(model, persona: str | Path | None, step: int) -> list[str]:
    """The live model's active adapters, or an error when they are not the step's (e.g. the persona off)."""
    active = models.active_adapters(model)
    expected = expected_adapters(persona, step)
    if sorted(active) != sorted(expected):
        raise RuntimeError(
            f"step {step}: active adapters {active}, expected {expected}"
            + (f" (persona {persona} must be active)" if persona is not None else "")
        )
    return active


def generate_steps(
    *,
    base: str | Path,
    persona: str | Path | None,
    run_dir: str | Path | None,
    outputs: dict[int, str | Path],
    questions_path: str | Path,
    select: dict,
    params: Generation,
    seed: int,
) -> dict[int, int]:
    """Write ``outputs[step]`` for every step (answered with ``run_dir``'s checkpoint of that step), one JSONL
    row per question × paraphrase × sample; returns the row count per step."""
    prompts = load_prompts(questions_path, select)
    model, tokenizer = models.load_for_inference(base, persona, None, dtype=params.dtype, device=params.device)
    counts = {}
    for step in sorted(outputs):
        model = models.swap_em_adapter(model, checkpoint_of(run_dir, step))
        log.info(
            "generating %d answers at step %d (adapters: %s)", len(prompts), step, check_adapters(model, persona, step)
        )
        rows = generate_rows(model, tokenizer, prompts, params=params, seed=seed, step=step)
        out = outputs[step]
        counts[step] = write_jsonl(out, rows)
        log.info("step %d: wrote %d rows to %s", step, counts[step], out)
    return counts
