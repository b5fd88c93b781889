"""The API judge: chat completions with one output token and its top logprobs, from any OpenAI-compatible
server through the official client, with the client's own retries off so ``emflow.judge.retry`` is the only
policy. The key is read from the environment variable the config names and scrubbed from every message."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from emflow.config.sections.judge import Judge
from emflow.errors import user_error
from emflow.judge.retry import NotAnAPIReply, RetryableReply, call_with_retries


def openai_request(model: str, top_logprobs: int, messages: list[dict]) -> dict:
    """Exactly what is sent for one judgment (and so the cache key): one token, greedy, with top logprobs."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": int(top_logprobs),
    }


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def top_logprobs_of(completion: Any) -> list[list]:
    """``[[token, logprob], ...]`` of the first output token of a chat completion (object or plain dict)."""
    if isinstance(completion, (str, bytes)):  # a 200 whose body is not JSON (an HTML page, a proxy's notice)
        head = completion.decode(errors="replace") if isinstance(completion, bytes) else completion
        head = " ".join(head.split())[:60]
        raise NotAnAPIReply(
            f"the server answered with text, not a chat completion ({head!r}...): is judge.base_url "
            "the API root of an OpenAI-compatible server, e.g. http://host:8000/v1?"
        )
    try:
        first = _get(_get(_get(completion, "choices")[0], "logprobs"), "content")[0]
        out = [[_get(t, "token"), float(_get(t, "logprob"))] for t in _get(first, "top_logprobs")]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
        raise RetryableReply(f"reply without logprobs ({type(err).__name__}: {err})") from None
    if not out:
        raise RetryableReply("reply with an empty top_logprobs list")
    return out


def api_key(env: str) -> str:
    """The judge API key from the environment variable ``env``, or one line naming the variable."""
    key = os.environ.get(env)
    if not key:
        raise user_error(
            "environment",
            env,
            f"the judge API key variable {env} is not set",
            f"export {env}=... (config judge.api_key_env names the variable)",
        )
    return key


class OpenAIBackend:
    """Chat completions with one output token and its top logprobs."""

    def __init__(self, judge: Judge, *, sleep: Callable[[float], None] = time.sleep):
        import openai

        self._key = api_key(judge.api_key_env)
        self.judge = judge
        self.model = judge.model
        self.concurrency = max(1, judge.concurrency)
        self.max_retries = judge.max_retries
        self.sleep = sleep  # retry waits and batch polls; tests pass a recorder
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self.client = openai.OpenAI(
            base_url=judge.base_url, api_key=self._key, max_retries=0, timeout=float(judge.timeout_s)
        )

    def request(self, messages: list[dict]) -> dict:
        return openai_request(self.model, self.judge.top_logprobs, messages)

    def _scrub(self, err: BaseException) -> str:
        import openai

        text = f"{type(err).__name__}: {err}"
        if isinstance(err, openai.APIConnectionError):
            text += f" (url: {self.client.base_url})"
        return text.replace(self._key, "***")

    def with_retries(self, fn: Callable[[], Any]) -> Any:
        """Run one API operation (a completion, a file upload, a batch poll) under the retry policy."""
        with self._rng_lock:
            rng = random.Random(self._rng.random())
        return call_with_retries(
            fn,
            max_retries=self.max_retries,
            backoff_base_s=self.judge.backoff_base_s,
            backoff_max_s=self.judge.backoff_max_s,
            sleep=self.sleep,
            rng=rng,
            describe=self._scrub,
        )

    def call(self, request: dict) -> list[list]:
        return self.with_retries(lambda: top_logprobs_of(self.client.chat.completions.create(**request)))
