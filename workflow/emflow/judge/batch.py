"""Judge through the OpenAI Batch API (``judge.mode: batch``): half the price, answers within the window.

The cache misses are written as a requests JSONL (``custom_id`` = the cache key, so replies map back by
key whatever order they come in), uploaded with the files API and submitted as one batch per
``batch_max_requests``. The batch ids are recorded at once, atomically, in ``<out>.batch.json`` beside the
output: a judge killed while waiting resumes polling the same batches instead of paying for them twice.
Every answered request goes into the same content-addressed cache as online mode, so online and batch runs
share answers. Requests a batch did not answer (per-request errors, an expired or cancelled batch, a reply
without logprobs) are submitted again, for at most ``max_retries`` further rounds.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from emflow.errors import EmflowError, user_error
from emflow.io import atomic_write_json
from emflow.judge.backends.openai import OpenAIBackend, top_logprobs_of
from emflow.judge.cache import JudgeCache
from emflow.judge.online import cached_replies
from emflow.judge.retry import RetryableReply

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"  # the only window the Batch API offers
DONE = {"completed", "expired", "cancelled", "failed"}
STATE_VERSION = 1


def state_path(out_path: str | Path) -> Path:
    return Path(f"{out_path}.batch.json")


def load_state(path: Path) -> list[str]:
    """Batch ids recorded by an earlier, interrupted judge of the same output."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except json.JSONDecodeError:
        raise user_error(
            path, None, "unreadable batch state", "delete it; batches it named are not collected"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("version") != STATE_VERSION
        or not isinstance(state.get("batches"), list)
    ):
        raise user_error(path, "batches", "unexpected batch state format", "delete it and rerun")
    return [str(b) for b in state["batches"]]


def save_state(path: Path, batch_ids: list[str]) -> None:
    atomic_write_json(path, {"version": STATE_VERSION, "batches": batch_ids})


def requests_jsonl(keys: list[str], requests: dict[str, dict]) -> bytes:
    lines = [
        json.dumps(
            {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": requests[key]},
            sort_keys=True,
            ensure_ascii=False,
        )
        for key in keys
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def submit(backend: OpenAIBackend, keys: list[str], requests: dict[str, dict]) -> str:
    """Upload one requests file and create its batch; returns the batch id."""
    content = requests_jsonl(keys, requests)
    upload = backend.with_retries(
        lambda: backend.client.files.create(
            file=("emflow_judge_requests.jsonl", io.BytesIO(content), "application/jsonl"), purpose="batch"
        )
    )
    batch = backend.with_retries(
        lambda: backend.client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={"created_by": "emflow judge"},
        )
    )
    log.info("submitted batch %s: %d requests (%d bytes, file %s)", batch.id, len(keys), len(content), upload.id)
    return batch.id


def _file_lines(backend: OpenAIBackend, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    text = backend.with_retries(lambda: backend.client.files.content(file_id).text)
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping an unreadable batch output line (its request will be resubmitted)")
    return out


def collect(backend: OpenAIBackend, batch: Any, requests: dict[str, dict], cache: JudgeCache) -> dict[str, list]:
    """Cache and return the usable replies of a finished batch, keyed by custom_id."""
    replies: dict[str, list] = {}
    failures: dict[str, int] = {}
    for line in _file_lines(backend, batch.output_file_id) + _file_lines(backend, batch.error_file_id):
        key, response = line.get("custom_id"), line.get("response") or {}
        if key not in requests:
            continue  # from an earlier batch of inputs that have since changed
        if response.get("status_code") != 200:
            reason = f"status {response.get('status_code')}" if response else f"error {line.get('error')}"
            failures[reason] = failures.get(reason, 0) + 1
            continue
        try:
            reply = top_logprobs_of(response.get("body") or {})
        except RetryableReply:
            failures["no logprobs"] = failures.get("no logprobs", 0) + 1
            continue
        cache.put(key, requests[key], reply)
        replies[key] = reply
    if failures:
        log.warning(
            "batch %s: %d requests unanswered (%s); they will be resubmitted",
            batch.id,
            sum(failures.values()),
            ", ".join(f"{n} x {r}" for r, n in failures.items()),
        )
    return replies


def wait(backend: OpenAIBackend, batch_ids: list[str], *, poll_s: float) -> dict[str, Any]:
    """Poll every ``poll_s`` until every batch is finished; returns the final batch objects by id.

    An id the server does not know (deleted, another account) is dropped with a warning: its requests are
    still missing afterwards and get resubmitted.
    """
    import openai
    from tqdm import tqdm

    latest: dict[str, Any] = {}
    pending = list(batch_ids)
    with tqdm(desc="judge batch", unit="request") as bar:
        while True:
            for bid in list(pending):
                try:
                    batch = backend.with_retries(lambda bid=bid: backend.client.batches.retrieve(bid))
                except EmflowError as err:
                    if not isinstance(err.__cause__, openai.NotFoundError):
                        raise
                    log.warning("batch %s is unknown to the server; its requests will be resubmitted", bid)
                    pending.remove(bid)
                    continue
                latest[bid] = batch
                if batch.status in DONE:
                    log.info("batch %s %s: %s", bid, batch.status, batch.request_counts)
                    pending.remove(bid)
            counts = [b.request_counts for b in latest.values() if b.request_counts]
            bar.total = sum(c.total for c in counts) or None
            bar.n = sum(c.completed + c.failed for c in counts)
            bar.refresh()
            if not pending:
                return {bid: b for bid, b in latest.items() if b.status in DONE}
            backend.sleep(poll_s)


def finished_replies(
    backend: OpenAIBackend,
    batch_ids: list[str],
    requests: dict[str, dict],
    cache: JudgeCache,
    *,
    state_file: Path,
    poll_s: float,
) -> dict[str, list]:
    """Wait for the batches, then cache and return their usable replies. A batch the API rejected (failed
    validation: it answers nothing and would fail again unchanged) stops with one line and is not resumed."""
    finished = wait(backend, batch_ids, poll_s=poll_s)
    replies: dict[str, list] = {}
    for batch in finished.values():
        replies.update(collect(backend, batch, requests, cache))
    rejected = [b for b in finished.values() if b.status == "failed"]
    if rejected:
        state_file.unlink(missing_ok=True)
        errors = getattr(rejected[0].errors, "data", None) or []
        text = "; ".join(f"{e.code}: {e.message}" for e in errors) or "no reason given"
        raise EmflowError(
            f"judge: batch {rejected[0].id} failed: {text} (fix: check the judge model "
            "and request format; answers so far are cached)"
        )
    return replies


def submit_all(
    backend: OpenAIBackend, keys: list[str], requests: dict[str, dict], *, state_file: Path, max_requests: int
) -> list[str]:
    """Submit ``keys`` as batches of at most ``max_requests``, recording each batch id as soon as it exists (a
    kill never loses a paid batch)."""
    batch_ids: list[str] = []
    for i in range(0, len(keys), max_requests):
        batch_ids.append(submit(backend, keys[i : i + max_requests], requests))
        save_state(state_file, batch_ids)
    return batch_ids


def fetch_replies_batch(
    requests: dict[str, dict],
    backend: OpenAIBackend,
    cache: JudgeCache,
    *,
    state_file: Path,
    poll_s: float,
    max_requests: int,
) -> tuple[dict[str, list], int]:
    """Like ``online.fetch_replies``, through the Batch API. Returns (replies, number found in the cache)."""
    replies = cached_replies(requests, cache)
    cached = len(replies)
    batch_ids = load_state(state_file)
    log.info(
        "judge requests: %d unique, %d cached, %d to batch%s",
        len(requests),
        cached,
        len(requests) - cached,
        f" (resuming batches {batch_ids})" if batch_ids else "",
    )
    for round_ in range(backend.max_retries + 2):  # the resumed/first round, then max_retries resubmissions
        if batch_ids:
            replies.update(finished_replies(backend, batch_ids, requests, cache, state_file=state_file, poll_s=poll_s))
        missing = [key for key in requests if key not in replies]
        if not missing:
            state_file.unlink(missing_ok=True)
            return replies, cached
        if round_ == backend.max_retries + 1:
            break
        batch_ids = submit_all(backend, missing, requests, state_file=state_file, max_requests=max_requests)
    state_file.unlink(missing_ok=True)
    raise EmflowError(
        f"judge: {len(missing)} requests still unanswered after {backend.max_retries + 1} batches "
        "(fix: rerun later or raise judge.max_retries; answers so far are cached)"
    )
