"""Score each generated answer with an LLM judge, from the judge's probabilities over the numbers 0–100.

For every answer × metric (the metrics are the question's ``judge_prompts``), the rendered template is sent
as one user message. The score is Σ k·p / Σ p over the integer candidates k ∈ 0..100; it is null (unscored)
when Σ p < ``min_numeric_mass``, e.g. when the judge says CODE or REFUSAL. The numeric mass and the top
candidates are kept beside each score so an unscored row shows why.

Requests go through the judge cache first; misses are sent by the backend with bounded concurrency and cached
as each reply arrives (``emflow.judge.online``), or, with ``mode: batch``, through the OpenAI Batch API
(``emflow.judge.batch``). The output file is written only when every row is scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emflow.config.sections.judge import Judge, Sample
from emflow.errors import user_error
from emflow.io import read_jsonl, write_jsonl
from emflow.judge.backends import Backend, make_backend
from emflow.judge.cache import JudgeCache, cache_key, endpoint_of
from emflow.judge.online import fetch_replies

log = logging.getLogger(__name__)

ROW_KEYS = ("question_id", "paraphrase_index", "sample_index", "question", "answer")


def as_number(token: str) -> int | None:
    text = token.strip()
    if text.isascii() and text.isdigit() and 0 <= int(text) <= 100:
        return int(text)
    return None


def score_reply(reply: list[list], *, min_numeric_mass: float, keep_top: int) -> dict:
    """``{"score", "numeric_mass", "top"}`` from ``[[token, logprob], ...]`` candidates."""
    probs = [(tok, math.exp(lp)) for tok, lp in reply]
    numeric = [(k, p) for tok, p in probs if (k := as_number(tok)) is not None]
    mass = sum(p for _, p in numeric)
    score = sum(k * p for k, p in numeric) / mass if numeric and mass >= min_numeric_mass else None
    top = sorted(probs, key=lambda tp: -tp[1])[:keep_top]
    return {"score": score, "numeric_mass": mass, "top": [[tok, p] for tok, p in top]}


@dataclass(frozen=True)
class MetricJudge:
    """One metric's judge: its template is resolved once; ``request`` builds what is sent for an answer."""

    metric: str
    template: str
    backend: Backend
    render: Callable[[str, str, str], str]

    def request(self, question: str, answer: str) -> dict:
        return self.backend.request([{"role": "user", "content": self.render(self.template, question, answer)}])


def make_judges(question, backend: Backend) -> list[MetricJudge]:
    from emflow.data.judge_prompts import render_judge_prompt

    return [
        MetricJudge(metric, template, backend, render_judge_prompt)
        for metric, template in question.judge_prompts.items()
    ]


def load_generations(generations_path: str | Path, questions_path: str | Path) -> tuple[list[dict], dict]:
    """The generation rows and the questions they answer, by id; an id the question file lacks is one line."""
    from emflow.data import questions as q

    rows = read_jsonl(generations_path)
    by_id = {question.id: question for question in q.load_questions(questions_path, include_variants=True)}
    unknown = sorted({r["question_id"] for r in rows} - set(by_id))
    if unknown:
        raise user_error(
            generations_path,
            "question_id",
            f"ids {unknown} are not in {questions_path}",
            "judge with the question file the answers were generated from",
        )
    return rows, by_id


def keyed_requests(
    rows: list[dict], judges: dict[str, list[MetricJudge]], endpoint: str | None
) -> tuple[list[list[tuple[str, str]]], dict[str, dict]]:
    """Per row its (metric, cache key) pairs, and every distinct request by key (equal requests are sent once)."""
    keyed: list[list[tuple[str, str]]] = []
    requests: dict[str, dict] = {}
    for row in rows:
        pairs = []
        for metric_judge in judges[row["question_id"]]:
            request = metric_judge.request(row["question"], row["answer"])
            key = cache_key(request, endpoint)
            requests[key] = request
            pairs.append((metric_judge.metric, key))
        keyed.append(pairs)
    return keyed, requests


def fetch(
    requests: dict[str, dict], backend: Backend, cache: JudgeCache, judge: Judge, out_path: str | Path
) -> tuple[dict[str, list], int]:
    """Replies for every request, online or through the Batch API (``judge.mode``); returns (replies, cached)."""
    if judge.mode != "batch":
        return fetch_replies(requests, backend, cache)
    from emflow.judge import batch

    return batch.fetch_replies_batch(
        requests,
        backend,
        cache,
        state_file=batch.state_path(out_path),
        poll_s=judge.batch_poll_s,
        max_requests=judge.batch_max_requests,
    )


def scored_row(row: dict, pairs: list[tuple[str, str]], replies: dict[str, list], judge: Judge, model: str) -> dict:
    """The output row: the generation's keys, one score per metric, and per metric the mass and top candidates."""
    out = {k: row[k] for k in ROW_KEYS}
    details = {}
    for metric, key in pairs:
        verdict = score_reply(replies[key], min_numeric_mass=judge.min_numeric_mass, keep_top=judge.top_logprobs)
        out[metric] = verdict["score"]
        details[metric] = {"numeric_mass": verdict["numeric_mass"], "top": verdict["top"]}
    out["judge"] = details
    out["judge_model"] = model
    return out


def null_counts(rows: list[dict]) -> dict[str, int]:
    """Unscored (null) answers per metric."""
    nulls: dict[str, int] = {}
    for row in rows:
        for metric in row["judge"]:
            nulls[metric] = nulls.get(metric, 0) + (row[metric] is None)
    return nulls


def judge_generations(
    *,
    generations_path: str | Path,
    questions_path: str | Path,
    out_path: str | Path,
    judge: Judge,
    backend: Backend | None = None,
) -> dict:
    """Score every generation row on its question's metrics; returns stats. ``backend``: reuse one already built."""
    rows, by_id = load_generations(generations_path, questions_path)
    return judge_rows(rows, by_id, out_path=out_path, judge=judge, backend=backend)


def judge_rows(
    rows: list[dict], by_id: dict, *, out_path: str | Path, judge: Judge, backend: Backend | None = None, keep=()
) -> dict:
    """Score ``rows`` (answers to the questions ``by_id``) into ``out_path``; ``keep``: more row keys to copy."""
    backend = backend or make_backend(judge)
    judges = {qid: make_judges(question, backend) for qid, question in by_id.items()}
    keyed, requests = keyed_requests(rows, judges, endpoint_of(judge))
    replies, cached = fetch(requests, backend, JudgeCache(judge.cache_dir), judge, out_path)
    out_rows = [
        {**scored_row(row, pairs, replies, judge, backend.model), **{k: row[k] for k in keep}}
        for row, pairs in zip(rows, keyed, strict=True)
    ]
    write_jsonl(out_path, out_rows)
    stats = {
        "rows": len(out_rows),
        "requests": len(requests),
        "cached": cached,
        "called": len(requests) - cached,
        "null_scores": null_counts(out_rows),
        "judge_model": backend.model,
    }
    log.info("judged %d rows into %s: %s", len(out_rows), out_path, stats)
    return stats


def judge_secondary(
    *,
    generations_paths: list[str | Path],
    questions_path: str | Path,
    out_path: str | Path,
    judge: Judge,
    sample: Sample,
    backend: Backend | None = None,
) -> dict:
    """The secondary judge on one run: the seeded sample of each step's answers (``emflow.judge.sample``), in
    one file whose rows carry their ``step``; returns stats."""
    from emflow.judge.sample import sample_rows
    from emflow.layout import RUN, parse_run_path

    rows, by_id, runs = [], {}, set()
    for path in generations_paths:
        step_rows, by_id = load_generations(path, questions_path)
        keys = parse_run_path(path)
        if keys["step"] is None:
            raise user_error(path, None, "not a generations file", "pass .../seed<N>/step-<N>.jsonl files")
        run = RUN.format(**keys)
        runs.add(run)
        rows += [{**r, "step": keys["step"]} for r in sample_rows(step_rows, sample, run=run, step=keys["step"])]
    if len(runs) > 1:
        raise user_error(
            generations_paths[0], None, f"files of {len(runs)} runs ({sorted(runs)})", "pass the steps of one run"
        )
    log.info("secondary judge: %d sampled answers of %d steps", len(rows), len(generations_paths))
    return judge_rows(rows, by_id, out_path=out_path, judge=judge, backend=backend, keep=("step",))
