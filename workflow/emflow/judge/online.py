"""Online judging: every request the cache lacks is sent by the backend, ``backend.concurrency`` at a time,
and cached as soon as its reply arrives."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed

from emflow.judge.backends import Backend
from emflow.judge.cache import JudgeCache

log = logging.getLogger(__name__)


def cached_replies(requests: dict[str, dict], cache: JudgeCache) -> dict[str, list]:
    """The replies the cache already holds, by key."""
    return {key: reply for key in requests if (reply := cache.get(key)) is not None}


def fetch_replies(requests: dict[str, dict], backend: Backend, cache: JudgeCache) -> tuple[dict[str, list], int]:
    """Reply for every key, from the cache or else from the backend (cached as soon as it arrives).

    Returns (replies, number found in the cache). On a failure, calls already in flight finish and are
    cached, pending ones are dropped, and the error is raised: a rerun asks only for what is still missing.
    """
    replies = cached_replies(requests, cache)
    cached = len(replies)
    missing = [key for key in requests if key not in replies]
    log.info("judge requests: %d unique, %d cached, %d to call", len(requests), cached, len(missing))
    if missing:
        replies.update(_call_all(missing, requests, backend, cache))
    return replies, cached


def _call_all(keys: list[str], requests: dict[str, dict], backend: Backend, cache: JudgeCache) -> dict[str, list]:
    """Call the backend for ``keys`` with bounded concurrency, caching each reply; stop at the first failure."""
    from tqdm import tqdm

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

    replies: dict[str, list] = {}
    with (
        ThreadPoolExecutor(max_workers=backend.concurrency) as pool,
        tqdm(total=len(keys), desc="judge", unit="call") as bar,
    ):
        futures = [pool.submit(one, key) for key in keys]
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
    return replies
