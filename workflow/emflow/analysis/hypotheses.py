"""Declared hypotheses (config ``analysis.hypotheses``): the EM-rate difference of two sets of runs at their final
step, with a bootstrap interval, a two-sided bootstrap p-value, its Holm adjustment across the declared set and a
verdict on the adjusted value (hypotheses.csv).

The test is the interval's own bootstrap (seeds, then answers within each seed, each side resampled on its own;
``stats.bootstrap_difference_replicates``): the p-value is the smallest 1 − confidence whose percentile interval
excludes 0 (``stats.bootstrap_p_value``), so an unadjusted p below 1 − confidence and an interval excluding 0 say
the same thing. Holm's step-down adjustment (``stats.holm``) then holds the family-wise error rate of the declared
set at 1 − confidence.
"""

from __future__ import annotations

import json
import logging
import math

import pandas as pd

from emflow.analysis import stats
from emflow.analysis.definitions import EMDefinition
from emflow.analysis.rates import group_seed, scores
from emflow.analysis.tables import RUN_COLS
from emflow.config.sections.analysis import Bootstrap, Hypothesis
from emflow.errors import user_error

log = logging.getLogger(__name__)

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
    "p_value",
    "p_holm",
    "verdict",
]


def select_runs(answers: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """Answers of the runs matching ``filters``, each run at its final step unless ``step`` is given."""
    sel = answers
    for key in ("base", "persona", "dataset", "variant"):
        if key in filters:
            vals = filters[key] if isinstance(filters[key], list) else [filters[key]]
            sel = sel[sel[key].isin([str(v) for v in vals])]
    if "step" not in filters:
        final = sel.groupby(RUN_COLS)["step"].transform("max")
        return sel[sel["step"] == final]
    return sel[sel["step"] == int(filters["step"])]


def verdict(difference: float, p_adjusted: float, direction: str, alpha: float) -> str:
    """``supported`` if the Holm-adjusted p-value is below ``alpha`` and the difference has the predicted sign,
    ``contradicted`` if it is below ``alpha`` with the other sign, else ``inconclusive``."""
    if math.isnan(difference) or math.isnan(p_adjusted) or p_adjusted >= alpha or difference == 0:
        return "inconclusive"
    if (direction == "greater") == (difference > 0):
        return "supported"
    return "contradicted"


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
    """One hypothesis's estimate, interval and raw p-value; the adjusted p-value and verdict come from the family."""
    # The baseline inherits the cell's filters and overrides them.
    cell_f = h.cell.keys()
    base_f = {**cell_f, **h.baseline.keys()}
    ck, cn = _side_counts(answers, cell_f, d, f"hypotheses[{h.id}].cell")
    bk, bn = _side_counts(answers, base_f, d, f"hypotheses[{h.id}].baseline")
    em_c = sum(ck) / sum(cn) if sum(cn) else math.nan
    em_b = sum(bk) / sum(bn) if sum(bn) else math.nan
    reps = stats.bootstrap_difference_replicates(
        (ck, cn), (bk, bn), resamples=bootstrap.resamples, seed=group_seed(bootstrap.seed, ["hypothesis", str(h.id)])
    )
    lo, hi = stats.percentile_interval(reps, confidence)
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
        "p_value": stats.bootstrap_p_value(reps),
    }


def hypotheses_table(
    answers: pd.DataFrame,
    hypotheses: tuple[Hypothesis, ...],
    definitions: dict[str, EMDefinition],
    primary: str,
    confidence: float,
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """hypotheses.csv: per hypothesis the EM-rate difference (cell − baseline) with a bootstrap interval, a two-sided
    bootstrap p-value (``p_value``), its Holm adjustment across every declared hypothesis (``p_holm``) and the
    verdict at level 1 − ``confidence`` on ``p_holm``.

    ``baseline: {persona: none}`` compares against the same base model and dataset without a persona; a
    hypothesis without ``definition`` uses ``primary``.
    """
    rows = [
        _hypothesis_row(answers, h, definitions[h.definition or primary], confidence, bootstrap) for h in hypotheses
    ]
    alpha = 1.0 - confidence
    floor = len(rows) * 2.0 / (bootstrap.resamples + 1)  # the smallest p_holm the resamples can show
    if rows and floor >= alpha:
        log.warning(
            "%d hypotheses with %d bootstrap resamples: no Holm-adjusted p-value can fall below %.3g, so none can "
            "be supported; raise analysis.bootstrap.resamples",
            len(rows),
            bootstrap.resamples,
            alpha,
        )
    for row, p_holm in zip(rows, stats.holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = p_holm
        row["verdict"] = verdict(row["difference"], p_holm, row["direction"], alpha)
    return pd.DataFrame(rows, columns=HYPOTHESIS_COLUMNS)
