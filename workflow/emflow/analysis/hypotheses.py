"""Declared hypotheses (config ``analysis.hypotheses``): the EM-rate difference of two sets of runs at their final
step, with a bootstrap interval and a verdict (hypotheses.csv)."""

from __future__ import annotations

import json
import math

import pandas as pd

from emflow.analysis import stats
from emflow.analysis.definitions import EMDefinition
from emflow.analysis.rates import group_seed, scores
from emflow.analysis.tables import RUN_COLS
from emflow.config.sections.analysis import Bootstrap, Hypothesis
from emflow.errors import user_error

HYPOTHESIS_COLUMNS = [
    "id",
    "description",
    "definition",
    "direction",
    "cell",
    "baseline",
    "n_cell_runs",
    "n_baseline_runs",
    "n_cell",
    "n_baseline",
    "em_cell",
    "em_baseline",
    "difference",
    "ci_low",
    "ci_high",
    "verdict",
]


def select_runs(answers: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """Answers of the runs matching ``filters``, each run at its final step unless ``step`` is given."""
    sel = answers
    for key in ("base", "persona", "dataset"):
        if key in filters:
            vals = filters[key] if isinstance(filters[key], list) else [filters[key]]
            sel = sel[sel[key].isin([str(v) for v in vals])]
    if "step" not in filters:
        final = sel.groupby(RUN_COLS)["step"].transform("max")
        return sel[sel["step"] == final]
    return sel[sel["step"] == int(filters["step"])]


def verdict(ci_low: float, ci_high: float, direction: str) -> str:
    """``supported`` if the interval excludes 0 on the predicted side, ``contradicted`` on the other side."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    above, below = ci_low > 0, ci_high < 0
    if (direction == "greater" and above) or (direction == "less" and below):
        return "supported"
    if above or below:
        return "contradicted"
    return "inconclusive"


def _side_counts(answers: pd.DataFrame, filters: dict, d: EMDefinition, where: str) -> tuple[list[int], list[int]]:
    """(EM answers, counted answers) per run matching ``filters``."""
    sel = select_runs(answers, filters)
    if sel.empty:
        raise user_error(
            "params",
            where,
            f"no judged answers match {filters}",
            "check the filter values against the experiment's cells",
        )
    per_run = [d.masks(*scores(g)) for _, g in sel.groupby(RUN_COLS)]
    return [int(e.sum()) for _, e in per_run], [int(c.sum()) for c, _ in per_run]


def _hypothesis_row(
    answers: pd.DataFrame, h: Hypothesis, d: EMDefinition, confidence: float, bootstrap: Bootstrap
) -> dict:
    # The baseline inherits the cell's filters and overrides them.
    cell_f = h.cell.keys()
    base_f = {**cell_f, **h.baseline.keys()}
    ck, cn = _side_counts(answers, cell_f, d, f"hypotheses[{h.id}].cell")
    bk, bn = _side_counts(answers, base_f, d, f"hypotheses[{h.id}].baseline")
    em_c = sum(ck) / sum(cn) if sum(cn) else math.nan
    em_b = sum(bk) / sum(bn) if sum(bn) else math.nan
    lo, hi = stats.bootstrap_difference_interval(
        (ck, cn),
        (bk, bn),
        confidence=confidence,
        resamples=bootstrap.resamples,
        seed=group_seed(bootstrap.seed, ["hypothesis", str(h.id)]),
    )
    return {
        "id": h.id,
        "description": h.description,
        "definition": d.name,
        "direction": h.direction,
        "cell": json.dumps(cell_f, sort_keys=True),
        "baseline": json.dumps(base_f, sort_keys=True),
        "n_cell_runs": len(ck),
        "n_baseline_runs": len(bk),
        "n_cell": sum(cn),
        "n_baseline": sum(bn),
        "em_cell": em_c,
        "em_baseline": em_b,
        "difference": em_c - em_b,
        "ci_low": lo,
        "ci_high": hi,
        "verdict": verdict(lo, hi, h.direction),
    }


def hypotheses_table(
    answers: pd.DataFrame,
    hypotheses: tuple[Hypothesis, ...],
    definitions: dict[str, EMDefinition],
    primary: str,
    confidence: float,
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """hypotheses.csv: EM-rate difference (cell − baseline) with a bootstrap interval and a verdict per hypothesis.

    ``baseline: {persona: none}`` compares against the same base model and dataset without a persona; a
    hypothesis without ``definition`` uses ``primary``.
    """
    rows = [
        _hypothesis_row(answers, h, definitions[h.definition or primary], confidence, bootstrap) for h in hypotheses
    ]
    return pd.DataFrame(rows, columns=HYPOTHESIS_COLUMNS)
