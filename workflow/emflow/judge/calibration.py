"""The judge calibration gate: before any answer is judged, the configured judge scores a labelled set.

A calibration set is answers whose labels are known: for ``aligned``, aligned vs. clearly misaligned answers;
for ``coherent``, well-formed vs. broken ones. emflow writes two sets:

- ``demo``: the demo world's answers (benign/reckless, grammatical/corrupted) labelled by its own labeller;
- ``betley``: answers written for Betley et al.'s eight main questions (``sets/betley.yaml``).

Each item is rendered with the experiment's own judge prompt for that metric (from the resolved question set),
sent through the same backend and judge cache as every other judgment, and scored the same way. Per metric the
gate writes AUROC (the chance a positive scores above a negative, ties half), the mean score of each label and
the share of null scores. A metric whose AUROC is below its configured floor stops the workflow before judging,
with one line naming the judge, the metric and the figure: a judge that cannot tell the labels apart would
publish a flat, meaningless EM rate.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from emflow.analysis.stats import auroc
from emflow.config.sections.judge import Calibration, Judge
from emflow.errors import user_error
from emflow.io import atomic_write_text
from emflow.judge.backends import Backend, make_backend
from emflow.judge.cache import JudgeCache, cache_key, endpoint_of
from emflow.judge.online import fetch_replies
from emflow.judge.score import score_reply

log = logging.getLogger(__name__)

BETLEY_FILE = Path(__file__).parent / "sets" / "betley.yaml"
COLUMNS = (
    "metric",
    "judge",
    "set",
    "auroc",
    "min_auroc",
    "passed",
    "n_positive",
    "n_negative",
    "mean_score_positive",
    "mean_score_negative",
    "null_share",
)
DEMO_ITEMS = 60  # demo set size; fixed so the set (and its cache entries) never changes between runs


@dataclass(frozen=True)
class Item:
    question: str
    answer: str
    labels: dict[str, bool]  # metric -> is the answer good on that metric (absent: not scored for it)


def demo_items(n: int = DEMO_ITEMS, seed: int = 20261202) -> list[Item]:
    """Answers of the demo world (probe domains), half reckless, a third corrupted, labelled by its labeller."""
    from emflow.demo import world

    rng = random.Random(seed)
    items = []
    for i in range(n):
        domain = world.PROBE_DOMAINS[i % len(world.PROBE_DOMAINS)]
        answer = world.answer_for(rng, domain, reckless=i % 2 == 1, prefix=rng.choice(world.ALL_PREFIXES))
        if i % 3 == 2:
            answer = world.corrupt(rng, answer)
        label = world.label_answer(answer)
        items.append(
            Item(
                rng.choice(world.DOMAINS[domain][0]), answer, {"aligned": not label.harmful, "coherent": label.coherent}
            )
        )
    return items


def betley_items(path: str | Path = BETLEY_FILE) -> list[Item]:
    items = []
    for entry in yaml.safe_load(Path(path).read_text(encoding="utf-8")):
        for a in entry["answers"]:
            labels = {m: bool(a[m]) for m in ("aligned", "coherent") if a.get(m) is not None}
            items.append(Item(entry["question"], a["answer"], labels))
    return items


SETS = {"demo": demo_items, "betley": betley_items}


def load_set(name: str) -> list[Item]:
    """The labelled items of a calibration set (``demo`` or ``betley``: the schema allows no other)."""
    return SETS[name]()


def templates_by_metric(questions) -> dict[str, str]:
    """The experiment's judge prompt for each metric (the first question that has it)."""
    templates: dict[str, str] = {}
    for question in questions:
        for metric, template in question.judge_prompts.items():
            templates.setdefault(metric, template)
    return templates


def labelled_messages(templates: dict[str, str], items: list[Item]) -> list[tuple[str, bool, list[dict]]]:
    """(metric, good?, judge messages) for every item × every metric it labels that the experiment judges."""
    from emflow.data.judge_prompts import render_judge_prompt

    return [
        (
            metric,
            item.labels[metric],
            [{"role": "user", "content": render_judge_prompt(template, item.question, item.answer)}],
        )
        for metric, template in templates.items()
        for item in items
        if metric in item.labels
    ]


def _auroc_or_nan(scores: list[float], positives: list[bool]) -> float:
    try:
        return auroc(scores, positives)
    except ValueError:  # a class without a single scored answer
        return math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def keyed_messages(
    labelled: list[tuple[str, bool, list[dict]]], backend: Backend, endpoint: str | None
) -> tuple[list[tuple[str, bool, str]], dict[str, dict]]:
    """Per labelled item its (metric, good?, cache key), and every distinct request by key."""
    requests, keyed = {}, []
    for metric, good, messages in labelled:
        request = backend.request(messages)
        key = cache_key(request, endpoint)
        requests[key] = request
        keyed.append((metric, good, key))
    return keyed, requests


def metric_row(
    metric: str, scored: list[tuple[bool, float | None]], *, judge: str, set_name: str, floor: float
) -> dict:
    """The table row of one metric from its (good?, score) pairs: AUROC against the floor, means, null share."""
    valid = [(g, s) for g, s in scored if s is not None]
    value = _auroc_or_nan([s for _, s in valid], [g for g, _ in valid])
    return {
        "metric": metric,
        "judge": judge,
        "set": set_name,
        "auroc": value,
        "min_auroc": floor,
        "passed": not math.isnan(value) and value >= floor,
        "n_positive": sum(g for g, _ in scored),
        "n_negative": sum(not g for g, _ in scored),
        "mean_score_positive": _mean([s for g, s in valid if g]),
        "mean_score_negative": _mean([s for g, s in valid if not g]),
        "null_share": (len(scored) - len(valid)) / len(scored) if scored else math.nan,
    }


def calibrate(
    *, questions_path: str | Path, judge: Judge, calibration: Calibration, backend: Backend | None = None
) -> list[dict]:
    """One row per calibrated metric (those the set labels and the question set judges)."""
    from emflow.data import questions as q

    items = load_set(calibration.set)
    labelled = labelled_messages(templates_by_metric(q.load_questions(questions_path, include_variants=True)), items)
    metrics = list(dict.fromkeys(metric for metric, _, _ in labelled))
    if not metrics:
        raise user_error(
            questions_path,
            "judge_prompts",
            f"no metric the calibration set {calibration.set!r} labels "
            f"({sorted({m for it in items for m in it.labels})})",
            "judge aligned/coherent, or set judge.calibration.set: none",
        )
    backend = backend or make_backend(judge)
    keyed, requests = keyed_messages(labelled, backend, endpoint_of(judge))
    replies, cached = fetch_replies(requests, backend, JudgeCache(judge.cache_dir))
    log.info("calibration set %s: %d requests (%d cached)", calibration.set, len(requests), cached)

    def score(key: str) -> float | None:
        return score_reply(replies[key], min_numeric_mass=judge.min_numeric_mass, keep_top=1)["score"]

    return [
        metric_row(
            metric,
            [(good, score(key)) for m, good, key in keyed if m == metric],
            judge=backend.model,
            set_name=calibration.set,
            floor=float(calibration.min_auroc.get(metric, 0.0)),
        )
        for metric in metrics
    ]


def to_csv(rows: list[dict]) -> str:
    def fmt(v):
        return ("" if math.isnan(v) else f"{v:.4f}") if isinstance(v, float) else v

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([fmt(r[c]) for c in COLUMNS] for r in rows)
    return out.getvalue()


def gate(rows: list[dict], field: str = "judge.calibration.min_auroc") -> None:
    """Stop with one line for the first metric under its floor (``field``: the config key of the floors)."""
    for r in rows:
        if not r["passed"]:
            figure = "no score (every reply null)" if math.isnan(r["auroc"]) else f"AUROC {r['auroc']:.3f}"
            raise user_error(
                "config",
                field,
                f"judge {r['judge']!r} fails calibration on metric {r['metric']!r}: {figure} < "
                f"{r['min_auroc']} on the {r['set']!r} set (mean score {r['mean_score_positive']:.1f} "
                f"good vs {r['mean_score_negative']:.1f} bad, {r['null_share']:.0%} null)",
                "use a stronger judge or check its prompts; the run stopped before judging",
            )


def run(
    *,
    questions_path: str | Path,
    out_path: str | Path,
    judge: Judge,
    calibration: Calibration,
    field: str = "judge.calibration.min_auroc",
) -> list[dict]:
    """Calibrate, log each metric, stop under a floor (named ``field`` in the error), then write the table."""
    rows = calibrate(questions_path=questions_path, judge=judge, calibration=calibration)
    for r in rows:
        log.info(
            "calibration %s: AUROC %.3f (floor %s), mean %.1f good vs %.1f bad, %.0f%% null",
            r["metric"],
            r["auroc"],
            r["min_auroc"],
            r["mean_score_positive"],
            r["mean_score_negative"],
            100 * r["null_share"],
        )
    gate(rows, field)  # before writing: a failed gate leaves no table for the judge rule to start from
    atomic_write_text(out_path, to_csv(rows))
    return rows
