"""The judge's API layer: what a request is, how it is sent, and the one retry policy.

A backend turns chat messages into a ``request`` (a dict holding exactly what is sent; it is the cache key)
and ``call(request)`` returns the judge's first-token candidates as ``[[token, logprob], ...]``. Scoring
(``emflow.judge.score``) never imports a client.

- ``openai``: any OpenAI-compatible server through the official client, with the client's own retries off
  so this module's policy (bounded attempts, Retry-After, exponential backoff with jitter) is the only one.
- ``hf``: a local causal LM. Numbers may span several tokens (Qwen splits digits), so instead of one
  next-token distribution it computes the exact probability of each string "0"…"100" followed by the
  end-of-turn token and returns all 101 as candidates.
"""

from __future__ import annotations

import copy
import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from emflow.errors import EmflowError, user_error

log = logging.getLogger(__name__)

COMMON_KEYS = {"backend", "model", "top_logprobs", "min_numeric_mass", "cache_dir", "mode"}
API_KEYS = {
    "base_url",
    "api_key_env",
    "concurrency",
    "max_retries",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
    "batch_poll_s",
    "batch_max_requests",
}
OPENAI_KEYS = COMMON_KEYS | API_KEYS
# API keys are accepted so one judge section can switch backend; they mean nothing to a local model.
HF_KEYS = COMMON_KEYS | API_KEYS | {"device", "dtype", "batch_size"}
MODES = ("online", "batch")
BACKEND_KEYS = {"openai": OPENAI_KEYS, "hf": HF_KEYS}
# The keys that mean something to each backend: what the workflow passes (config overlays cannot delete an
# inherited key, so switching the demo's hf judge to an API leaves device/batch_size behind, ignored).
USED_KEYS = {"openai": OPENAI_KEYS, "hf": COMMON_KEYS | {"device", "dtype", "batch_size"}}


def backend_params(section: dict) -> dict:
    """The judge section reduced to the keys its backend uses (a config's other judge keys are not params)."""
    return {k: v for k, v in section.items() if k in USED_KEYS.get(section.get("backend"), ())}


NUMBERS = range(0, 101)


class Backend(Protocol):
    model: str
    concurrency: int

    def request(self, messages: list[dict]) -> dict: ...

    def call(self, request: dict) -> list[list]: ...


def check_params(params: dict, source: str = "config") -> dict:
    backend = params.get("backend")
    if backend not in BACKEND_KEYS:
        raise user_error(source, "judge.backend", f"unknown backend {backend!r}", "use openai or hf")
    unknown = set(params) - BACKEND_KEYS[backend]
    if unknown:
        raise user_error(
            source,
            "judge",
            f"unknown keys {sorted(unknown)} for backend {backend}",
            f"use only {sorted(BACKEND_KEYS[backend])}",
        )
    required = {"model", "top_logprobs", "min_numeric_mass", "cache_dir"}
    if backend == "openai":
        required |= {"api_key_env", "concurrency", "max_retries", "timeout_s"}
    missing = required - set(params)
    if missing:
        raise user_error(source, "judge", f"missing keys {sorted(missing)}", "set them in config.yaml")
    mode = params.get("mode", "online")
    if mode not in MODES:
        raise user_error(source, "judge.mode", f"unknown mode {mode!r}", "use online or batch")
    if mode == "batch" and backend != "openai":
        raise user_error(
            source, "judge.mode", "batch mode needs the openai backend", "use mode: online with backend hf"
        )
    return params


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


def top_logprobs_of(completion: Any) -> list[list]:
    """``[[token, logprob], ...]`` of the first output token of a chat completion (object or plain dict)."""

    def get(obj: Any, name: str) -> Any:
        return obj[name] if isinstance(obj, dict) else getattr(obj, name)

    if isinstance(completion, (str, bytes)):  # a 200 whose body is not JSON (an HTML page, a proxy's notice)
        head = completion.decode(errors="replace") if isinstance(completion, bytes) else completion
        head = " ".join(head.split())[:60]
        raise NotAnAPIReply(
            f"the server answered with text, not a chat completion ({head!r}...): is judge.base_url "
            "the API root of an OpenAI-compatible server, e.g. http://host:8000/v1?"
        )

    try:
        first = get(get(get(completion, "choices")[0], "logprobs"), "content")[0]
        out = [[get(t, "token"), float(get(t, "logprob"))] for t in get(first, "top_logprobs")]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as err:
        raise RetryableReply(f"reply without logprobs ({type(err).__name__}: {err})") from None
    if not out:
        raise RetryableReply("reply with an empty top_logprobs list")
    return out


# ---------------------------------------------------------------------------------------------- retries


class RetryableReply(Exception):
    """A reply that arrived but cannot be used (malformed body, no logprobs): worth asking again."""


class NotAnAPIReply(Exception):
    """A 200 whose body is plain text or HTML: base_url points at something that is not the API (not retried)."""


def _retry_after_s(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
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
    import json

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
    """Call ``fn``; retry transient failures up to ``max_retries`` times.

    The wait is the server's Retry-After when it gives one, else exponential backoff with equal jitter
    (half fixed, half random) so parallel workers do not retry in lockstep.
    """
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
            wait = _retry_after_s(err)
            if wait is None:
                cap = min(backoff_max_s, backoff_base_s * 2**attempt)
                wait = cap / 2 + rng.uniform(0, cap / 2)
            log.warning("judge call failed (%s); retry %d/%d in %.2fs", describe(err), attempt + 1, max_retries, wait)
            sleep(wait)
    raise AssertionError("unreachable")


class JudgeCallError(EmflowError):
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


# ---------------------------------------------------------------------------------------------- openai


class OpenAIBackend:
    """Chat completions with one output token and its top logprobs."""

    def __init__(self, params: dict, *, sleep: Callable[[float], None] = time.sleep):
        import openai

        env = params["api_key_env"]
        key = os.environ.get(env)
        if not key:
            raise user_error(
                "environment",
                env,
                f"the judge API key variable {env} is not set",
                f"export {env}=... (config judge.api_key_env names the variable)",
            )
        self._key = key
        self.model = params["model"]
        self.top_logprobs = int(params["top_logprobs"])
        self.concurrency = max(1, int(params["concurrency"]))
        self.max_retries = int(params["max_retries"])
        self.backoff_base_s = float(params.get("backoff_base_s", 1.0))
        self.backoff_max_s = float(params.get("backoff_max_s", 60.0))
        self.sleep = sleep  # retry waits and batch polls; tests pass a recorder
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self.client = openai.OpenAI(
            base_url=params.get("base_url"), api_key=key, max_retries=0, timeout=float(params["timeout_s"])
        )

    def request(self, messages: list[dict]) -> dict:
        return openai_request(self.model, self.top_logprobs, messages)

    def _scrub(self, err: BaseException) -> str:
        import openai

        text = f"{type(err).__name__}: {err}"
        if isinstance(err, openai.APIConnectionError):
            text += f" (url: {self.client.base_url})"
        return text.replace(self._key, "***") if self._key else text

    def _once(self, request: dict) -> list[list]:
        return top_logprobs_of(self.client.chat.completions.create(**request))

    def with_retries(self, fn: Callable[[], Any]) -> Any:
        """Run one API operation (a completion, a file upload, a batch poll) under the retry policy."""
        with self._rng_lock:
            rng = random.Random(self._rng.random())
        return call_with_retries(
            fn,
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            sleep=self.sleep,
            rng=rng,
            describe=self._scrub,
        )

    def call(self, request: dict) -> list[list]:
        return self.with_retries(lambda: self._once(request))


# ---------------------------------------------------------------------------------------------- hf


def hf_request(model: str, terminator: str, messages: list[dict]) -> dict:
    return {
        "backend": "hf",
        "model": model,
        "messages": messages,
        "add_generation_prompt": True,
        "scoring": "exact_0_100",
        "terminator": terminator,
    }


class HFBackend:
    """Exact P("0")…P("100") from a local causal LM (each number followed by the end-of-turn token)."""

    concurrency = 1  # one model in memory; batching happens inside a call

    def __init__(self, params: dict):
        from emflow import models

        self.model = str(params["model"])
        self.batch_size = int(params.get("batch_size", len(NUMBERS)))
        self.tokenizer = models.load_tokenizer(self.model)
        self.lm = models.load_base(self.model, dtype=params.get("dtype", "auto"), device=params.get("device", "auto"))
        self.terminator = self.tokenizer.eos_token
        term_id = self.tokenizer.convert_tokens_to_ids(self.terminator)
        self.continuations = [self.tokenizer.encode(str(k), add_special_tokens=False) + [term_id] for k in NUMBERS]
        self._lock = threading.Lock()

    def request(self, messages: list[dict]) -> dict:
        return hf_request(self.model, self.terminator, messages)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def number_logprobs(self, messages: list[dict]) -> list[float]:
        """log P(str(k) + terminator | prompt) for k = 0..100, from one prefix pass and cached continuations."""
        import torch

        device = next(self.lm.parameters()).device
        prefix = torch.tensor([self.prompt_ids(messages)], device=device)
        with torch.inference_mode():
            out = self.lm(input_ids=prefix, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            result: list[float] = []
            for start in range(0, len(self.continuations), self.batch_size):
                conts = self.continuations[start : start + self.batch_size]
                width = max(len(c) for c in conts) - 1
                # Right padding is harmless: causal attention means pads only follow the positions we read.
                pad = self.tokenizer.pad_token_id
                feed = torch.tensor([c[:-1] + [pad] * (width - len(c) + 1) for c in conts], device=device)
                cache = copy.deepcopy(out.past_key_values)
                cache.batch_repeat_interleave(len(conts))
                logp = torch.log_softmax(
                    self.lm(input_ids=feed, past_key_values=cache, use_cache=True).logits.float(), dim=-1
                )
                for row, c in enumerate(conts):
                    total = first[c[0]]
                    for j in range(1, len(c)):
                        total = total + logp[row, j - 1, c[j]]
                    result.append(float(total))
        return result

    def call(self, request: dict) -> list[list]:
        with self._lock:
            logps = self.number_logprobs(request["messages"])
        return sorted(([str(k), lp] for k, lp in zip(NUMBERS, logps)), key=lambda kv: -kv[1])


def make_backend(params: dict, **kwargs) -> Backend:
    params = check_params(params)
    if params["backend"] == "openai":
        return OpenAIBackend(params, **kwargs)
    if not Path(str(params["model"])).is_dir():
        raise user_error(
            "config",
            "judge.model",
            f"hf judge model {params['model']!r} is not a local directory",
            "run the fetch target on a machine with internet, then point judge.model at it",
        )
    return HFBackend(params)
