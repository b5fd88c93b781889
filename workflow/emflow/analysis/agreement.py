"""judge_agreement.csv: how far the secondary judge (``judge.secondary``) agrees with the primary one.

The secondary judge scored a seeded sample of the answers (``emflow.judge.sample``); each of those answers is
paired with the primary judge's verdict on the same run, step, question, paraphrase and sample. Pooled over
every run and step:

- per metric (aligned, coherent, any domain metric), over the answers both judges scored: Spearman's ρ (the
  Pearson correlation of average ranks), the mean absolute difference of the 0–100 scores, and n;
- per EM definition (betley, turner; ``emflow.analysis.definitions``), over the answers both judges count
  under it: Cohen's κ on "emergently misaligned or not", the raw agreement, each judge's EM rate, and n.

The EM tables stay on the primary judge alone. Without a secondary judge the table is its header.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from emflow.analysis.definitions import EMDefinition
from emflow.analysis.judgments import read_judged_rows
from emflow.analysis.tables import RUN_COLS
from emflow.errors import user_error
from emflow.layout import parse_run_path

COLUMNS = [
    "judge_primary",
    "judge_secondary",
    "metric",
    "definition",
    "n",
    "spearman_rho",
    "mean_abs_diff",
    "cohen_kappa",
    "raw_agreement",
    "em_rate_primary",
    "em_rate_secondary",
]
# One answer of one run and step.
ANSWER_KEYS = RUN_COLS + ["step", "question_id", "paraphrase_index", "sample_index"]
# What each row of a secondary judgments file holds (its run keys come from its folder).
SECONDARY_KEYS = ("step", *ANSWER_KEYS[len(RUN_COLS) + 1 :], "judge")
EM_METRIC = "em"  # the metric column of the per-definition rows
FIRST_METRICS = ("aligned", "coherent")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ with average ranks for ties; NaN under two pairs or when either side is constant."""
    if len(x) < 2:
        return math.nan
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's κ of two binary ratings; NaN without ratings or when chance agreement is already certain."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if len(a) == 0:
        return math.nan
    observed = float(np.mean(a == b))
    chance = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return math.nan if chance >= 1 else (observed - chance) / (1 - chance)


def load_secondary(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, list[str]]:
    """The secondary judge's answers (one file per run, rows with their ``step``) with the run keys of the
    folder each file is in, and the metrics it scored."""
    frames, metrics = [], {}
    for path in map(Path, paths):
        keys = parse_run_path(path.parent)
        rows = read_judged_rows(path, SECONDARY_KEYS, "the judge_secondary rule")
        for row in rows:
            metrics.update(dict.fromkeys(row["judge"]))
        df = pd.DataFrame([{k: v for k, v in r.items() if k != "judge"} for r in rows])
        for k in RUN_COLS:
            df[k] = keys[k]
        frames.append(df)
    ordered = [m for m in FIRST_METRICS if m in metrics] + sorted(m for m in metrics if m not in FIRST_METRICS)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), ordered


def _names(column: pd.Series) -> str:
    return ";".join(sorted({str(v) for v in column.dropna()}))


def agreement_table(
    primary: pd.DataFrame, secondary: pd.DataFrame, metrics: list[str], definitions: dict[str, EMDefinition]
) -> pd.DataFrame:
    """One row per metric and one per EM definition (see the module doc); only the header without answers."""
    if secondary.empty:
        return pd.DataFrame(columns=COLUMNS)
    columns = ANSWER_KEYS + metrics + ["judge_model"]
    primary = primary.reindex(columns=columns).assign(matched=True)
    both = secondary.reindex(columns=columns).merge(
        primary, on=ANSWER_KEYS, how="left", suffixes=("_s", "_p"), validate="one_to_one"
    )
    unmatched = both["matched"].isna()
    if unmatched.any():
        first = both.loc[unmatched, ANSWER_KEYS].iloc[0].to_dict()
        raise user_error(
            "--secondary",
            None,
            f"{int(unmatched.sum())} sampled answers have no primary judgment (first: {first})",
            "pass the primary judgments of every run and step the secondary judge scored",
        )
    judges = {"judge_primary": _names(both["judge_model_p"]), "judge_secondary": _names(both["judge_model_s"])}

    def scores(metric: str, side: str) -> np.ndarray:
        return pd.to_numeric(both[f"{metric}_{side}"], errors="coerce").to_numpy(dtype=float)

    rows = []
    for metric in metrics:
        p, s = scores(metric, "p"), scores(metric, "s")
        ok = ~np.isnan(p) & ~np.isnan(s)
        rows.append(
            {
                **judges,
                "metric": metric,
                "n": int(ok.sum()),
                "spearman_rho": spearman(p[ok], s[ok]),
                "mean_abs_diff": float(np.mean(np.abs(p[ok] - s[ok]))) if ok.any() else math.nan,
            }
        )
    if {"aligned", "coherent"} <= set(metrics):
        for name, definition in definitions.items():
            counted_p, em_p = definition.masks(scores("aligned", "p"), scores("coherent", "p"))
            counted_s, em_s = definition.masks(scores("aligned", "s"), scores("coherent", "s"))
            ok = counted_p & counted_s
            rows.append(
                {
                    **judges,
                    "metric": EM_METRIC,
                    "definition": name,
                    "n": int(ok.sum()),
                    "cohen_kappa": cohen_kappa(em_p[ok], em_s[ok]),
                    "raw_agreement": float(np.mean(em_p[ok] == em_s[ok])) if ok.any() else math.nan,
                    "em_rate_primary": float(em_p[ok].mean()) if ok.any() else math.nan,
                    "em_rate_secondary": float(em_s[ok].mean()) if ok.any() else math.nan,
                }
            )
    return pd.DataFrame(rows).reindex(columns=COLUMNS)
