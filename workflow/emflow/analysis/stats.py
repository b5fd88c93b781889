"""Interval estimates for EM rates (Wilson intervals per run, seeded bootstraps across seeds and answers) and the
hypotheses' tests: bootstrap p-values and Holm's adjustment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """P(a random positive scores higher than a random negative), ties counting half (Mann–Whitney U)."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    if not pos or not neg:
        raise ValueError("AUROC needs both classes")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def z_value(confidence: float) -> float:
    """Two-sided normal quantile, e.g. 1.959964 for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0.

    Wilson rather than the normal approximation: EM rates sit near 0, where the Wald interval collapses.
    """
    if n == 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    z = z_value(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # k == 0 and k == n give exactly 0 and 1 analytically; avoid float noise like 2.8e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def bootstrap_pooled_rates(
    successes: Sequence[int], totals: Sequence[int], *, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of a pooled proportion, resampling seeds and then answers within each seed.

    Each group (seed) contributes ``successes[i]`` of ``totals[i]`` binary outcomes. Resampling the answers of
    a group with replacement gives a Binomial(n_i, k_i / n_i) count, so the two-level bootstrap is drawn
    exactly without materialising answers. Replicates whose resampled seeds hold no answers are NaN.
    """
    k = np.asarray(successes, dtype=np.int64)
    n = np.asarray(totals, dtype=np.int64)
    if k.shape != n.shape or k.ndim != 1:
        raise ValueError("successes and totals must be 1-d sequences of equal length")
    if len(n) == 0:
        return np.full(resamples, np.nan)
    p = np.divide(k, n, out=np.zeros(len(n)), where=n > 0)
    idx = rng.integers(0, len(n), size=(resamples, len(n)))
    counts = rng.binomial(n[idx], p[idx])
    denom = n[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, counts.sum(axis=1) / np.maximum(denom, 1), np.nan)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring NaN replicates; (nan, nan) if none remain."""
    vals = np.asarray(replicates, dtype=float)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(vals, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def bootstrap_pooled_interval(
    successes: Sequence[int], totals: Sequence[int], *, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Seeded percentile interval of a pooled proportion (seeds, then answers, resampled).

    A pool with no successes (or no failures) gives the degenerate interval [0, 0] ([1, 1]): resampling cannot
    produce an event that never occurred. The per-run Wilson intervals in em.csv stay informative there.
    """
    rng = np.random.default_rng(seed)
    reps = bootstrap_pooled_rates(successes, totals, resamples=resamples, rng=rng)
    return percentile_interval(reps, confidence)


def bootstrap_difference_replicates(
    cell: tuple[Sequence[int], Sequence[int]],
    baseline: tuple[Sequence[int], Sequence[int]],
    *,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """Bootstrap replicates of (cell rate − baseline rate), each side resampled independently (seeds, then
    answers); one set serves both the interval and the p-value of a hypothesis."""
    rng = np.random.default_rng(seed)
    a = bootstrap_pooled_rates(*cell, resamples=resamples, rng=rng)
    b = bootstrap_pooled_rates(*baseline, resamples=resamples, rng=rng)
    return a - b


def bootstrap_difference_interval(
    cell: tuple[Sequence[int], Sequence[int]],
    baseline: tuple[Sequence[int], Sequence[int]],
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of (cell rate − baseline rate), each side resampled independently."""
    reps = bootstrap_difference_replicates(cell, baseline, resamples=resamples, seed=seed)
    return percentile_interval(reps, confidence)


def bootstrap_p_value(replicates: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from bootstrap replicates of a difference: the achieved significance
    level of the percentile interval, i.e. the smallest 1 − confidence whose interval excludes 0.

    ``2 · (1 + #{replicates on the rarer side of 0}) / (B + 1)``, capped at 1, over the B non-NaN replicates; a
    replicate equal to 0 counts on both sides. So identical pools (every replicate 0) give exactly 1, and pools
    that never overlap give the smallest value B replicates can show, 2 / (B + 1), never 0. NaN without replicates.
    """
    vals = np.asarray(replicates, dtype=float)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return math.nan
    rarer = min(int((vals <= 0).sum()), int((vals >= 0).sum()))
    return min(1.0, 2.0 * (1 + rarer) / (vals.size + 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate), in input order.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m − j + 1) · p_(j)). NaN p-values (a
    hypothesis without counted answers) stay NaN and are not part of the family.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]
