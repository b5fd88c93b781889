"""Declared hypotheses: the bootstrap p-value against its exact value, Holm's adjustment by hand, and the verdict on
the adjusted value."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from emflow.analysis import stats
from emflow.analysis.definitions import em_definitions
from emflow.analysis.hypotheses import HYPOTHESIS_COLUMNS, hypotheses_table, verdict
from emflow.config.sections.analysis import Bootstrap
from support.study import analysis_section

RESAMPLES = 20_000  # Monte Carlo SE of a p-value near 0.1 is then ~0.004


def _pooled_rate_pmf(successes: list[int], totals: list[int]) -> dict[float, float]:
    """Exact distribution of one side's bootstrap replicate: seeds drawn with replacement (every index tuple equally
    likely), then Binomial(n_i, k_i / n_i) answers of each drawn seed."""
    s = len(totals)
    pmf: dict[float, float] = {}
    for draw in itertools.product(range(s), repeat=s):
        counts = np.array([1.0])  # distribution of the summed count over the drawn seeds
        for i in draw:
            counts = np.convolve(counts, binom.pmf(np.arange(totals[i] + 1), totals[i], successes[i] / totals[i]))
        n = sum(totals[i] for i in draw)
        for c, pr in enumerate(counts):
            pmf[c / n] = pmf.get(c / n, 0.0) + pr / s**s
    return pmf


def _exact_p(cell: tuple[list[int], list[int]], baseline: tuple[list[int], list[int]]) -> float:
    """The bootstrap p-value with infinitely many resamples: 2 · min(P(d ≤ 0), P(d ≥ 0)), capped at 1."""
    a, b = _pooled_rate_pmf(*cell), _pooled_rate_pmf(*baseline)
    le = sum(pa * pb for (x, pa), (y, pb) in itertools.product(a.items(), b.items()) if x - y <= 1e-12)
    ge = sum(pa * pb for (x, pa), (y, pb) in itertools.product(a.items(), b.items()) if x - y >= -1e-12)
    return min(1.0, 2 * min(le, ge))


def test_holm_matches_hand_computation():
    # Sorted 0.01, 0.03, 0.04 -> 3·0.01 = 0.03, 2·0.03 = 0.06, max(1·0.04, 0.06) = 0.06; back in input order.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.02]) == [0.02]  # a family of one is not adjusted
    got = stats.holm([0.01, math.nan, 0.04])  # NaN is outside the family: m = 2
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert stats.holm([]) == []


def test_bootstrap_p_value_counts_the_rarer_side_with_ties_on_both():
    assert stats.bootstrap_p_value(np.zeros(999)) == 1.0  # identical pools: every replicate 0
    assert stats.bootstrap_p_value(np.full(999, 0.3)) == pytest.approx(2 / 1000)  # never 0 from B replicates
    assert stats.bootstrap_p_value(np.array([-1.0, 1, 2, 3, 4])) == pytest.approx(2 * 2 / 6)
    assert stats.bootstrap_p_value(np.array([-2.0, 0, 1, 2, np.nan])) == 1.0  # 0 counts on both sides; NaN dropped
    assert math.isnan(stats.bootstrap_p_value(np.array([np.nan])))


@pytest.mark.parametrize(
    "cell, baseline, exact",
    [
        (([2], [4]), ([0], [4]), 2 * 0.5**4),  # one seed each: P(d ≤ 0) = P(no EM in 4 draws at 1/2)
        (([2, 0], [2, 2]), ([0], [4]), 2 * 0.25),  # two seeds: d = 0 only when the EM-free seed is drawn twice
        (([3, 1], [5, 4]), ([1, 0], [6, 3]), None),  # no hand formula: exact enumeration only
    ],
)
def test_bootstrap_p_value_matches_its_exact_value(cell, baseline, exact):
    truth = _exact_p(cell, baseline)
    if exact is not None:
        assert truth == pytest.approx(exact)
    reps = stats.bootstrap_difference_replicates(cell, baseline, resamples=RESAMPLES, seed=3)
    se = 2 * math.sqrt(truth / 2 * (1 - truth / 2) / RESAMPLES)
    assert stats.bootstrap_p_value(reps) == pytest.approx(truth, abs=4 * se + 2 / RESAMPLES)


def test_p_value_agrees_with_the_interval():
    # Same replicates: p < 1 − confidence exactly when the percentile interval excludes 0 (up to the +1 correction).
    for seed in range(20):
        reps = stats.bootstrap_difference_replicates(([9, 7], [20, 20]), ([3, 5], [20, 20]), resamples=999, seed=seed)
        lo, hi = stats.percentile_interval(reps, 0.9)
        p = stats.bootstrap_p_value(reps)
        if lo > 0 or hi < 0:
            assert p <= 0.1 + 2 / 1000
        else:
            assert p >= 0.1 - 2 / 1000


def _answers(em_counts: dict[tuple[str, int], tuple[int, int]]) -> pd.DataFrame:
    """Final-step answers: (persona, seed) -> (EM answers, answers), every answer coherent."""
    rows = []
    for (persona, seed), (k, n) in em_counts.items():
        for i in range(n):
            rows.append(
                {
                    "base": "tiny",
                    "persona": persona,
                    "dataset": "d",
                    "variant": "default",
                    "seed": seed,
                    "step": 10,
                    "question_id": "q",
                    "aligned": 5.0 if i < k else 90.0,
                    "coherent": 90.0,
                }
            )
    return pd.DataFrame(rows)


def _hyp(hid: str, persona: str, direction: str = "greater") -> dict:
    return {"id": hid, "cell": {"persona": persona}, "baseline": {"persona": "none"}, "direction": direction}


def _table(answers: pd.DataFrame, hyps: list[dict], resamples: int = RESAMPLES) -> pd.DataFrame:
    a = analysis_section(hypotheses=hyps, bootstrap={"resamples": resamples, "seed": 0})
    defs = em_definitions(a.definitions)
    return hypotheses_table(answers, a.hypotheses, defs, a.primary, a.confidence, a.bootstrap).set_index("id")


def test_verdict_flips_to_inconclusive_when_only_the_raw_p_passes():
    # 'half': 3 of 6 EM against 0 of 6, one seed each: exact p = 2 · (1/2)^6 = 0.03125 < 0.05.
    answers = _answers({("none", 0): (0, 6), ("half", 0): (3, 6), ("same", 0): (0, 6)})
    alone = _table(answers, [_hyp("H1", "half")])
    assert alone.loc["H1", "p_value"] == pytest.approx(0.03125, abs=0.006)
    assert alone.loc["H1", "p_holm"] == alone.loc["H1", "p_value"]
    assert alone.loc["H1", "verdict"] == "supported"
    # Declared beside a null hypothesis (p = 1 exactly), Holm doubles it past 0.05: the raw p still passes.
    both = _table(answers, [_hyp("H1", "half"), _hyp("H2", "same")])
    assert both.loc["H1", "p_value"] == alone.loc["H1", "p_value"]  # each hypothesis has its own bootstrap seed
    assert both.loc["H1", "p_holm"] == pytest.approx(2 * both.loc["H1", "p_value"])
    assert both.loc["H2", "p_value"] == 1.0 and both.loc["H2", "p_holm"] == 1.0
    assert both.loc["H1", "verdict"] == "inconclusive" and both.loc["H2", "verdict"] == "inconclusive"
    assert list(both.reset_index().columns) == HYPOTHESIS_COLUMNS


def test_clear_difference_is_supported_or_contradicted_at_the_resampling_floor():
    answers = _answers({("none", 0): (0, 20), ("none", 1): (0, 20), ("bad", 0): (20, 20), ("bad", 1): (20, 20)})
    t = _table(answers, [_hyp("up", "bad"), _hyp("down", "bad", "less")], resamples=999)
    # Every replicate is +1: p = 2 / 1000 each, Holm 2 · 0.002 then max(0.004, 1 · 0.002).
    assert t["p_value"].tolist() == pytest.approx([0.002, 0.002]) and t["p_holm"].tolist() == pytest.approx([0.004] * 2)
    assert t.loc["up", "verdict"] == "supported" and t.loc["down", "verdict"] == "contradicted"


@pytest.mark.parametrize(
    "difference, p_holm, direction, expected",
    [
        (0.2, 0.01, "greater", "supported"),
        (-0.2, 0.01, "less", "supported"),
        (-0.2, 0.01, "greater", "contradicted"),
        (0.2, 0.05, "greater", "inconclusive"),  # at alpha exactly: not below it
        (0.0, 0.01, "greater", "inconclusive"),
        (math.nan, math.nan, "less", "inconclusive"),
    ],
)
def test_verdict_reads_the_adjusted_p_value_and_the_sign(difference, p_holm, direction, expected):
    assert verdict(difference, p_holm, direction, 0.05) == expected


def test_too_few_resamples_for_the_family_are_named(caplog):
    answers = _answers({("none", 0): (0, 6), ("bad", 0): (6, 6)})
    hyps = [_hyp(f"H{i}", "bad") for i in range(3)]
    a = analysis_section(hypotheses=hyps)
    with caplog.at_level("WARNING"):
        hypotheses_table(
            answers, a.hypotheses, em_definitions(a.definitions), a.primary, 0.95, Bootstrap(resamples=99, seed=0)
        )
    assert "raise analysis.bootstrap.resamples" in caplog.text
