"""The judge's backends: what a request is and how it is sent.

A backend turns chat messages into a ``request`` (a dict holding exactly what is sent; it is the cache key)
and ``call(request)`` returns the judge's first-token candidates as ``[[token, logprob], ...]``. Scoring
(``emflow.judge.score``) never imports a client.

- ``openai`` (backends/openai.py): any OpenAI-compatible server through the official client, under the one
  retry policy of ``emflow.judge.retry``.
- ``hf`` (backends/hf.py): a local causal LM giving the exact probability of each number 0..100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from emflow.config.sections.judge import Judge
from emflow.errors import user_error


class Backend(Protocol):
    model: str
    concurrency: int

    def request(self, messages: list[dict]) -> dict: ...

    def call(self, request: dict) -> list[list]: ...


def make_backend(judge: Judge, **kwargs) -> Backend:
    """The configured backend (``kwargs`` go to the openai backend: tests pass ``sleep``)."""
    if judge.backend == "openai":
        from emflow.judge.backends.openai import OpenAIBackend

        return OpenAIBackend(judge, **kwargs)
    if not Path(judge.model).is_dir():
        raise user_error(
            "config",
            "judge.model",
            f"hf judge model {judge.model!r} is not a local directory",
            "run the fetch target on a machine with internet, then point judge.model at it",
        )
    from emflow.judge.backends.hf import HFBackend

    return HFBackend(judge)
