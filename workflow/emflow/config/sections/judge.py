"""The ``judge:`` section: which judge scores the answers, how it is called, and the calibration gate.

One judge section may carry keys its backend ignores (config overlays cannot delete a key, so switching the
demo's hf judge to an API leaves ``device``/``batch_size`` behind): ``used()`` keeps only the configured
backend's keys. Of those, ``tracked()`` decides what is scored (a judge job's Snakemake params: changing them
reruns its jobs) and ``runtime()`` only how fast (passed beside the params: tuning them reruns nothing).

``judge.secondary`` is a second judge with the same keys (``JudgeKeys``) plus ``sample``: which answers of each
run and step it scores. Its jobs receive its keys as a ``Judge`` (``tracked()``/``runtime()`` never hold
``sample`` or ``secondary``), so every judge command takes one kind of section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emflow.config.sections.base import Section, canonical_json

COMMON_KEYS = ("backend", "model", "top_logprobs", "min_numeric_mass", "cache_dir", "mode")
API_KEYS = (
    "base_url",
    "api_key_env",
    "concurrency",
    "max_retries",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
    "batch_poll_s",
    "batch_max_requests",
)
HF_KEYS = ("device", "dtype", "batch_size")
# The keys that mean something to each backend (run_on, prices and calibration are read by the workflow,
# `emflow estimate` and the calibration gate, never by a judge job).
USED_KEYS = {"openai": COMMON_KEYS + API_KEYS, "hf": COMMON_KEYS + HF_KEYS}
# Settings that change how fast judging runs, never a score.
RUNTIME_KEYS = (
    "concurrency",
    "max_retries",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
    "batch_poll_s",
    "batch_max_requests",
    "batch_size",
)


@dataclass(frozen=True)
class Price(Section):
    """$ per million tokens of one judge model (``batch_discount``: the fraction taken off in mode batch)."""

    input_per_mtok: float
    output_per_mtok: float
    batch_discount: float = 0.0


@dataclass(frozen=True)
class Calibration(Section):
    """The gate before judging: a labelled set (demo, betley or none) and each metric's AUROC floor."""

    set: str
    min_auroc: dict[str, float]

    @property
    def enabled(self) -> bool:
        return self.set != "none"


def _no_calibration() -> Calibration:
    return Calibration(set="none", min_auroc={})


@dataclass(frozen=True)
class Sample(Section):
    """The secondary judge's answers per run and step: ``fraction`` of them (rounded, at least one) or ``count``
    (at most all), chosen by ``seed`` (``emflow.judge.sample``)."""

    fraction: float | None = None
    count: int | None = None
    seed: int = 0

    def size(self, n: int) -> int:
        """How many of ``n`` answers are scored."""
        if self.count is not None:
            return min(self.count, n)
        return min(n, max(1, round(self.fraction * n))) if n else 0


@dataclass(frozen=True)
class JudgeKeys(Section):
    """The keys every judge has, the primary one and ``judge.secondary`` alike."""

    backend: str  # openai | hf
    model: str  # API model name (openai) or local model directory (hf)
    top_logprobs: int
    min_numeric_mass: float
    cache_dir: str
    base_url: str | None = None
    # Required by the schema for backend openai only (an hf judge never reads them).
    api_key_env: str | None = None
    concurrency: int | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 101
    mode: str = "online"
    batch_poll_s: float = 60.0
    batch_max_requests: int = 50_000
    run_on: str = "login"
    prices: dict[str, Price] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=_no_calibration)

    def used(self) -> dict[str, Any]:
        """The keys the configured backend uses, as plain values."""
        data = self.to_dict()
        return {k: data[k] for k in USED_KEYS[self.backend]}

    def tracked(self) -> dict[str, Any]:
        """What is scored and how: a judge job's tracked params."""
        return {k: v for k, v in self.used().items() if k not in RUNTIME_KEYS}

    def runtime(self) -> dict[str, Any]:
        """Speed-only settings of the configured backend, kept out of the tracked params."""
        return {k: v for k, v in self.used().items() if k in RUNTIME_KEYS}

    def tracked_json(self) -> str:
        return canonical_json(self.tracked())

    def runtime_json(self) -> str:
        return canonical_json(self.runtime())


@dataclass(frozen=True)
class SecondaryJudge(JudgeKeys):
    """``judge.secondary``: a second judge scoring a seeded ``sample`` of the answers, for judge_agreement.csv."""

    sample: Sample = field(kw_only=True)


@dataclass(frozen=True)
class Judge(JudgeKeys):
    """``judge:``: the judge whose scores make every EM table, and optionally a second one to compare it with."""

    secondary: SecondaryJudge | None = None
