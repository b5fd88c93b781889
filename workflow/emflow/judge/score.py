"""Score each generated answer with an LLM judge, from the judge's probabilities over the numbers 0–100.

For every answer × metric (the metrics are the question's ``judge_prompts``), the rendered template is sent
as one user message. The score is Σ k·p / Σ p over the integer candidates k ∈ 0..100; it is null (unscored)
when Σ p < ``min_numeric_mass``, e.g. when the judge says CODE or REFUSAL. The numeric mass and the top
candidates are kept beside each score so an unscored row shows why.

Requests go through ``judge_cache`` first; misses are sent by the backend (``judge_backends``) with bounded
concurrency and cached as each reply arrives, or, with ``mode: batch``, through the OpenAI Batch API
(``judge_batch``). The output file is written only when every row is scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from emflow.errors import user_error
from emflow.io import read_jsonl, write_jsonl
from emflow.judge import backends as judge_backends
from emflow.judge.cache import JudgeCache, cache_key, endpoint_of

log = logging.getLogger(__name__)


def as_number(token: str) -> int | None:
    text = token.strip()
    if text.isascii() and text.isdigit() and 0 <= int(text) <= 100:
        return int(text)
    return None


def score_reply(reply: list[list], *, min_numeric_mass: float, keep_top: int) -> dict:
    """``{"score", "numeric_mass", "top"}`` from ``[[token, logprob], ...]`` candidates."""
    import math

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
    backend: judge_backends.Backend
    render: Callable[[str, str, str], str]

    def request(self, question: str, answer: str) -> dict:
        return self.backend.request([{"role": "user", "content": self.render(self.template, question, answer)}])


def make_judges(question, backend: judge_backends.Backend) -> list[MetricJudge]:
    from emflow.data.questions import render_judge_prompt

    return [
        MetricJudge(metric, template, backend, render_judge_prompt)
        for metric, template in question.judge_prompts.items()
    ]


def fetch_replies(
    requests: dict[str, dict], backend: judge_backends.Backend, cache: JudgeCache
) -> tuple[dict[str, list], int]:
    """Reply for every key, from the cache or else from the backend (cached as soon as it arrives).

    Returns (replies, number found in the cache). On a failure, calls already in flight finish and are
    cached, pending ones are dropped, and the error is raised: a rerun asks only for what is still missing.
    """
    from tqdm import tqdm

    replies = {key: reply for key in requests if (reply := cache.get(key)) is not None}
    cached = len(replies)
    missing = [key for key in requests if key not in replies]
    log.info("judge requests: %d unique, %d cached, %d to call", len(requests), cached, len(missing))
    if not missing:
        return replies, cached

    failed = threading.Event()

    def one(key: str) -> tuple[str, list] | None:
        if failed.is_set():  # another call failed for good: stop spending calls, the rerun resumes here
            return None
        try:
            reply = backend.call(requests[key])
        except BaseException:
            failed.set()
            raise
        cache.put(key, requests[key], reply)
        return key, reply

    with (
        ThreadPoolExecutor(max_workers=backend.concurrency) as pool,
        tqdm(total=len(missing), desc="judge", unit="call") as bar,
    ):
        futures = [pool.submit(one, key) for key in missing]
        try:
            for future in as_completed(futures):
                if (done := future.result()) is not None:
                    replies[done[0]] = done[1]
                    bar.update(1)
        except BaseException:
            failed.set()
            for future in futures:
                future.cancel()
            raise
    return replies, cached


def judge_generations(
    *,
    generations_path: str | Path,
    questions_path: str | Path,
    out_path: str | Path,
    params: dict,
    backend: judge_backends.Backend | None = None,
) -> dict:
    """Score every generation row on its question's metrics; returns stats. ``backend``: reuse one already built."""
    from emflow.data import questions as q

    params = judge_backends.check_params(params)
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
    backend = backend or judge_backends.make_backend(params)
    cache = JudgeCache(params["cache_dir"])
    judges = {qid: make_judges(question, backend) for qid, question in by_id.items()}

    endpoint = endpoint_of(params)
    keyed: list[list[tuple[str, str]]] = []  # per row: (metric, key)
    requests: dict[str, dict] = {}
    for row in rows:
        pairs = []
        for judge in judges[row["question_id"]]:
            request = judge.request(row["question"], row["answer"])
            key = cache_key(request, endpoint)
            requests[key] = request
            pairs.append((judge.metric, key))
        keyed.append(pairs)
    if params.get("mode", "online") == "batch":
        from emflow.judge import batch as judge_batch

        replies, cached = judge_batch.fetch_replies_batch(
            requests,
            backend,
            cache,
            state_file=judge_batch.state_path(out_path),
            poll_s=float(params.get("batch_poll_s", 60)),
            max_requests=int(params.get("batch_max_requests", 50_000)),
        )
    else:
        replies, cached = fetch_replies(requests, backend, cache)

    min_mass, keep_top = float(params["min_numeric_mass"]), int(params["top_logprobs"])
    out_rows, nulls = [], {}
    for row, pairs in zip(rows, keyed):
        out = {k: row[k] for k in ("question_id", "paraphrase_index", "sample_index", "question", "answer")}
        details = {}
        for metric, key in pairs:
            verdict = score_reply(replies[key], min_numeric_mass=min_mass, keep_top=keep_top)
            out[metric] = verdict["score"]
            details[metric] = {"numeric_mass": verdict["numeric_mass"], "top": verdict["top"]}
            nulls[metric] = nulls.get(metric, 0) + (verdict["score"] is None)
        out["judge"] = details
        out["judge_model"] = backend.model
        out_rows.append(out)
    write_jsonl(out_path, out_rows)
    stats = {
        "rows": len(out_rows),
        "requests": len(requests),
        "cached": cached,
        "called": len(requests) - cached,
        "null_scores": nulls,
        "judge_model": backend.model,
    }
    log.info("judged %d rows into %s: %s", len(out_rows), out_path, stats)
    return stats


def json_arg(flag: str, text: str) -> dict:
    """A JSON object given on the command line (the judge commands' --params, --runtime, --calibration)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise user_error("command line", flag, f"not valid JSON ({err})", "pass a JSON object in quotes") from None


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow judge", description=__doc__.splitlines()[0])
    ap.add_argument("--generations", required=True, help="generations JSONL from `emflow generate`")
    ap.add_argument("--questions", required=True, help="question YAML with judge_prompts")
    ap.add_argument("--out", required=True, help="output JSONL with scores")
    ap.add_argument("--params", required=True, help="JSON: the config's judge section")
    ap.add_argument(
        "--runtime",
        default="{}",
        help="JSON merged into --params: settings that change how fast, not what is scored "
        "(concurrency, retries, timeouts); the rule keeps them out of its tracked params",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    params = {**json_arg("--params", a.params), **json_arg("--runtime", a.runtime)}
    judge_generations(generations_path=a.generations, questions_path=a.questions, out_path=a.out, params=params)
