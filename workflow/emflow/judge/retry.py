"""The judge's one retry policy: which failures are worth another attempt, and how long to wait first.

Transient failures (rate limits, server errors, timeouts, a reply without logprobs) are retried a bounded
number of times, waiting the server's Retry-After when it sends one, else exponential backoff with equal
jitter. API rejections a retry cannot fix (bad key, no quota, bad request, a base_url that is not the API)
stop at once. Anything else is a bug and is re-raised unchanged.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from emflow.errors import EmflowError

log = logging.getLogger(__name__)


class RetryableReply(Exception):
    """A reply that arrived but cannot be used (malformed body, no logprobs): worth asking again."""


class NotAnAPIReply(Exception):
    """A 200 whose body is plain text or HTML: base_url points at something that is not the API (not retried)."""


class JudgeCallError(EmflowError):
    """A judge call that failed for good: rejected, or still failing after every retry."""

    def __init__(self, message: str, *, attempts: int, fatal: bool):
        self.attempts, self.fatal = attempts, fatal
        if fatal:
            text = (
                f"judge: call rejected: {message} (fix: check judge.base_url, the judge model, key and quota; "
                "answers so far are cached)"
            )
        else:
            text = (
                f"judge: gave up after {attempts} attempts: {message} "
                "(fix: rerun later or raise judge.max_retries; answers so far are cached)"
            )
        super().__init__(text)


def retry_after_s(err: BaseException) -> float | None:
    """The wait the server asked for (``retry-after-ms``, or ``retry-after`` in seconds or as an HTTP date)."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else max(0.0, when.timestamp() - time.time())


def _is_quota(err: BaseException) -> bool:
    body = getattr(err, "body", None)
    code = getattr(err, "code", None) or (body.get("code") if isinstance(body, dict) else None)
    return code == "insufficient_quota" or "insufficient_quota" in str(err)


def classify(err: BaseException) -> str:
    """``retry`` for transient failures, ``fatal`` for API rejections a retry cannot fix, else ``bug``."""
    import openai

    if isinstance(err, NotAnAPIReply):
        return "fatal"
    if isinstance(err, (RetryableReply, json.JSONDecodeError)):
        # A 200 whose body is not JSON surfaces from the client as a decode error.
        return "retry"
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status == 429:
            return "fatal" if _is_quota(err) else "retry"
        return "retry" if status in (408, 409) or status >= 500 else "fatal"
    if isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError)):
        return "retry"  # timeouts are connection errors
    return "bug"


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter (half fixed, half random): parallel workers do not retry in lockstep."""
    cap = min(max_s, base_s * 2**attempt)
    return cap / 2 + rng.uniform(0, cap / 2)


def call_with_retries(
    fn: Callable[[], Any],
    *,
    max_retries: int,
    backoff_base_s: float,
    backoff_max_s: float,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    describe: Callable[[BaseException], str] = str,
) -> Any:
    """Call ``fn``; retry transient failures up to ``max_retries`` times (``describe`` scrubs secrets)."""
    rng = rng or random.Random()
    for attempt in range(max_retries + 1):
        try:
            return fn()
        except Exception as err:  # classified below; anything unrecognised is re-raised unchanged
            kind = classify(err)
            if kind == "bug":
                raise
            if kind == "fatal" or attempt == max_retries:
                raise JudgeCallError(describe(err), attempts=attempt + 1, fatal=kind == "fatal") from err
            wait = retry_after_s(err)
            if wait is None:
                wait = backoff_s(attempt, base_s=backoff_base_s, max_s=backoff_max_s, rng=rng)
            log.warning("judge call failed (%s); retry %d/%d in %.2fs", describe(err), attempt + 1, max_retries, wait)
            sleep(wait)
    raise AssertionError("unreachable")
