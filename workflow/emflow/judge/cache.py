"""Content-addressed cache of judge replies: one small JSON file per request.

The key is the sha256 of the sorted JSON of exactly what is sent to the judge (model, messages, sampling
and logprob settings) plus ``CACHE_VERSION``; timeouts, concurrency and retries are not part of a request,
so they never change a key. Entries live at ``<cache_dir>/<2 hex>/<hash>.json`` and are written with
tmp + rename as each answer arrives: several Slurm jobs may share the folder on a parallel filesystem
without locks, a killed judge resumes without repeating a call, and every run and seed shares the answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emflow.config.sections.judge import Judge
from emflow.errors import user_error
from emflow.io import atomic_write_text, stable_hash

# Bump when the stored reply format or the meaning of a request changes.
CACHE_VERSION = 1


def cache_key(request: dict, endpoint: str | None = None) -> str:
    """Hash of exactly what is sent, and where: two servers may serve different models under one name.

    ``endpoint`` None is the default OpenAI API (and the local hf judge, whose request names its model path).
    """
    sent = {"cache_version": CACHE_VERSION, "request": request}
    return stable_hash(sent if endpoint is None else {**sent, "endpoint": endpoint.rstrip("/")})


def endpoint_of(judge: Judge) -> str | None:
    """The server a judge's requests go to, as part of their cache key (None: OpenAI's API or a local hf model,
    whose request names its path)."""
    return judge.base_url if judge.backend == "openai" else None


class JudgeCache:
    def __init__(self, cache_dir: str | Path):
        self.root = Path(cache_dir)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)["reply"]
        except (json.JSONDecodeError, KeyError, TypeError):
            # Entries are renamed into place whole, so this is outside damage, not a half-written file.
            raise user_error(path, None, "unreadable judge cache entry", "delete this file and rerun") from None

    def put(self, key: str, request: dict, reply: Any) -> None:
        # The request is stored beside the reply so an entry can be audited without the code that made it.
        entry = {"cache_version": CACHE_VERSION, "key": key, "request": request, "reply": reply}
        atomic_write_text(self.path(key), json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
