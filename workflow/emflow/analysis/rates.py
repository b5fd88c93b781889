"""EM and coherence rates: per run and step with Wilson intervals (em.csv), pooled over seeds per cell
(em_by_cell.csv) and per question (per_question.csv) with seeded bootstrap intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from emflow.analysis import stats
from emflow.analysis.definitions import EMDefinition
from emflow.analysis.tables import CELL_COLS, RUN_COLS, sort_rows
from emflow.config.sections.analysis import Bootstrap
from emflow.io import stable_hash

RATE_COLUMNS = [
    "n_answers",
    "n_scored",
    "n_em",
    "em_rate",
    "em_ci_low",
    "em_ci_high",
    "n_coherence_scored",
    "n_coherent",
    "coherent_rate",
    "coherent_ci_low",
    "coherent_ci_high",
    "mean_aligned",
    "mean_coherent",
]
EM_COLUMNS = RUN_COLS + ["step", "definition"] + RATE_COLUMNS + ["judge_model"]
CELL_COLUMNS = CELL_COLS + ["step", "definition", "n_seeds", "seeds"] + RATE_COLUMNS + ["em_seed_sd"]
QUESTION_COLUMNS = CELL_COLS + ["step", "definition", "question_id", "n_seeds"] + RATE_COLUMNS


def scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, coherent) of some answers as float arrays, NaN where unscored."""
    return df["aligned"].to_numpy(dtype=float), df["coherent"].to_numpy(dtype=float)


def group_seed(base_seed: int, key: Any) -> int:
    """A bootstrap seed per group: a group's interval does not change when other cells join the study."""
    return int(stable_hash([base_seed, key])[:12], 16)


def rates(aligned: np.ndarray, coherent: np.ndarray, definition: EMDefinition, confidence: float) -> dict[str, float]:
    """Counts, rates and Wilson intervals of one pool of answers."""
    counted, em = definition.masks(aligned, coherent)
    has_c = ~np.isnan(coherent)
    with np.errstate(invalid="ignore"):
        n_coh = int((has_c & (coherent > definition.coherent_above)).sum())
    n_scored, n_em, n_cs = int(counted.sum()), int(em.sum()), int(has_c.sum())
    em_lo, em_hi = stats.wilson_interval(n_em, n_scored, confidence)
    c_lo, c_hi = stats.wilson_interval(n_coh, n_cs, confidence)
    return {
        "n_answers": len(aligned),
        "n_scored": n_scored,
        "n_em": n_em,
        "em_rate": n_em / n_scored if n_scored else math.nan,
        "em_ci_low": em_lo,
        "em_ci_high": em_hi,
        "n_coherence_scored": n_cs,
        "n_coherent": n_coh,
        "coherent_rate": n_coh / n_cs if n_cs else math.nan,
        "coherent_ci_low": c_lo,
        "coherent_ci_high": c_hi,
        "mean_aligned": float(np.nanmean(aligned)) if (~np.isnan(aligned)).any() else math.nan,
        "mean_coherent": float(np.nanmean(coherent)) if has_c.any() else math.nan,
    }


def em_table(
    answers: pd.DataFrame, files: pd.DataFrame, definitions: dict[str, EMDefinition], confidence: float
) -> pd.DataFrame:
    """em.csv: one row per run × step × definition (Wilson intervals); a judgments file without answers counts."""
    groups = {k: g for k, g in answers.groupby(RUN_COLS + ["step"], sort=False)}
    rows = []
    for f in files.itertuples(index=False):
        key = tuple(getattr(f, c) for c in RUN_COLS + ["step"])
        aligned, coherent = scores(groups[key]) if key in groups else (np.array([]), np.array([]))
        for d in definitions.values():
            rows.append(
                {
                    **dict(zip(RUN_COLS + ["step"], key, strict=True)),
                    "definition": d.name,
                    **rates(aligned, coherent, d, confidence),
                    "judge_model": f.judge_model,
                }
            )
    return sort_rows(pd.DataFrame(rows, columns=EM_COLUMNS), RUN_COLS + ["step", "definition"])


def _pooled_row(
    key: dict, seeds: list, parts: list[pd.DataFrame], d: EMDefinition, confidence: float, bootstrap: Bootstrap
) -> dict:
    """One group's rates under ``d``, its seeds' answers pooled; intervals bootstrap seeds, then answers."""
    aligned = np.concatenate([scores(p)[0] for p in parts]) if parts else np.array([])
    coherent = np.concatenate([scores(p)[1] for p in parts]) if parts else np.array([])
    row = {
        **key,
        "definition": d.name,
        "n_seeds": len(seeds),
        "seeds": ";".join(str(s) for s in seeds),
        **rates(aligned, coherent, d, confidence),
    }
    per_seed = [rates(*scores(p), d, confidence) for p in parts]
    em_k, em_n = [r["n_em"] for r in per_seed], [r["n_scored"] for r in per_seed]
    co_k, co_n = [r["n_coherent"] for r in per_seed], [r["n_coherence_scored"] for r in per_seed]
    gseed = group_seed(bootstrap.seed, [str(k) for k in key.values()] + [d.name])
    kw = {"confidence": confidence, "resamples": bootstrap.resamples}
    row["em_ci_low"], row["em_ci_high"] = stats.bootstrap_pooled_interval(em_k, em_n, seed=gseed, **kw)
    co_lo_hi = stats.bootstrap_pooled_interval(co_k, co_n, seed=gseed + 1, **kw)
    row["coherent_ci_low"], row["coherent_ci_high"] = co_lo_hi
    seed_rates = [r["em_rate"] for r in per_seed if r["n_scored"]]
    row["em_seed_sd"] = float(np.std(seed_rates, ddof=1)) if len(seed_rates) > 1 else math.nan
    return row


def _pooled_table(
    answers: pd.DataFrame,
    files: pd.DataFrame,
    keys: list[str],
    definitions: dict[str, EMDefinition],
    confidence: float,
    bootstrap: Bootstrap,
    desc: str,
) -> pd.DataFrame:
    """Rates pooled over seeds per ``keys`` × definition."""
    by_seed = {k: g for k, g in answers.groupby(keys + ["seed"], sort=False)}
    if "question_id" in keys:  # one group per question actually answered in the cell
        groups = answers.groupby(keys, sort=True)
    else:  # one group per cell and step judged, answers or not
        groups = files.groupby(keys, sort=True)
    group_seeds = {k: sorted(g["seed"].unique()) for k, g in groups}
    rows = []
    for key, seeds in tqdm(group_seeds.items(), desc=desc, unit="cell", disable=None):
        key = key if isinstance(key, tuple) else (key,)
        parts = [by_seed.get(key + (s,), answers.iloc[0:0]) for s in seeds]
        rows += [
            _pooled_row(dict(zip(keys, key, strict=True)), seeds, parts, d, confidence, bootstrap)
            for d in definitions.values()
        ]
    return pd.DataFrame(rows)


def em_by_cell_table(
    answers: pd.DataFrame,
    files: pd.DataFrame,
    definitions: dict[str, EMDefinition],
    confidence: float,
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """em_by_cell.csv: one row per cell × step × definition, pooled over seeds."""
    keys = CELL_COLS + ["step"]
    df = _pooled_table(answers, files, keys, definitions, confidence, bootstrap, "bootstrap cells")
    return sort_rows(df.reindex(columns=CELL_COLUMNS), keys + ["definition"])


def per_question_table(
    answers: pd.DataFrame,
    files: pd.DataFrame,
    definitions: dict[str, EMDefinition],
    confidence: float,
    bootstrap: Bootstrap,
) -> pd.DataFrame:
    """per_question.csv: one row per cell × step × question × definition, pooled over seeds."""
    keys = CELL_COLS + ["step", "question_id"]
    df = _pooled_table(answers, files, keys, definitions, confidence, bootstrap, "bootstrap questions")
    return sort_rows(df.reindex(columns=QUESTION_COLUMNS), CELL_COLS + ["step", "definition", "question_id"])
