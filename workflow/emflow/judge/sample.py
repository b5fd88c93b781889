"""Which answers the secondary judge scores: a seeded sample of each run and step, stable as the grid grows.

Every answer gets a rank: the hash of (seed, run, step, question id, paraphrase, sample index), and the
``Sample.size(n)`` lowest ranks of a step's ``n`` answers are scored. The rank depends on the answer's identity
only, never on the other answers, steps or seeds, so adding a seed, a step or a run leaves every existing choice
as it was; a larger count or fraction scores a superset of a smaller one; the answer's text plays no part, so
``emflow estimate`` can make the same choice before anything is generated.
"""

from __future__ import annotations

from emflow.config.sections.judge import Sample
from emflow.io import stable_hash

IDENTITY = ("question_id", "paraphrase_index", "sample_index")


def rank(sample: Sample, run: str, step: int, row: dict) -> str:
    return stable_hash({"seed": sample.seed, "run": run, "step": int(step), **{k: row[k] for k in IDENTITY}})


def sample_rows(rows: list[dict], sample: Sample, *, run: str, step: int) -> list[dict]:
    """The rows of one run and step that the secondary judge scores, in their original order."""
    chosen = sorted(range(len(rows)), key=lambda i: rank(sample, run, step, rows[i]))[: sample.size(len(rows))]
    return [rows[i] for i in sorted(chosen)]
