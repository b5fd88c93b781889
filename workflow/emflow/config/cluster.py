"""Job sizes on a cluster: the two kinds of submitted job and the walltimes sized from the plan.

A cluster profile (profiles/leonardo, profiles/slurm-test) passes one mapping as Snakemake config, next to its
other machine settings (``config: {cluster: ...}``); the workflow takes it out of the config before the
experiment is validated (how a job is sized changes no result, so it is not part of the experiment).

- ``gpu``: train, generate, and judge/judge_calibration with ``judge.backend: hf``: one GPU each.
- ``internet``: the rules that need the internet when submitted (fetch_hf, fetch_url, an API judge with
  ``judge.run_on: job``): a partition with outbound internet (Leonardo: ``lrd_all_serial``, on the login nodes).

Each kind holds the Snakemake resources its jobs get (``slurm_partition``, ``gres``, ``cpus_per_task``,
``mem_mb``, ...) and ``max_runtime``, the partition's walltime limit in minutes. A GPU rule's walltime is
``max(floor_min, ceil(units x per_unit_min)) x attempt`` (units: the run's optimizer steps for train, the
answers of the job for generate and judge), at most ``max_runtime``: a job killed at its walltime is retried
with more time (training resumes from its checkpoint; generation and judging skip what is already written or
cached). An internet job gets its kind's fixed ``runtime`` the same way (x attempt, at most ``max_runtime``).

Snakemake hands nested ``--config`` values over as text, so numbers are read from text here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emflow.errors import user_error

KINDS = ("gpu", "internet")
# Rules whose walltime is sized from the plan, and the unit each one counts.
WALLTIME_UNITS = {"train": "optimizer steps", "generate": "answers", "judge": "answers"}
_INT_KEYS = ("cpus_per_task", "mem_mb", "max_runtime", "runtime", "floor_min")
SOURCE = "profile config `cluster`"


@dataclass(frozen=True)
class Walltime:
    """Minutes per unit of work and the floor of a GPU rule's walltime."""

    per_unit_min: float
    floor_min: int

    def minutes(self, units: int, attempt: int, max_runtime: int) -> int:
        return min(max_runtime, max(self.floor_min, math.ceil(units * self.per_unit_min)) * attempt)


@dataclass(frozen=True)
class JobKind:
    """The Snakemake resources of one kind of job and its partition's walltime limit (minutes)."""

    resources: dict[str, Any]
    max_runtime: int
    runtime: int | None = None  # a fixed walltime (internet jobs); GPU rules size theirs from the plan

    @property
    def partition(self) -> str:
        return str(self.resources.get("slurm_partition", "the default partition"))

    def fixed_minutes(self, attempt: int) -> int:
        return min(self.max_runtime, (self.runtime or self.max_runtime) * attempt)


@dataclass(frozen=True)
class Cluster:
    kinds: dict[str, JobKind]
    walltime: dict[str, Walltime]

    def gpu_minutes(self, rule: str, units: int, attempt: int) -> int:
        """The walltime of a GPU job of ``rule`` (train | generate | judge) doing ``units`` of work."""
        return self.walltime[rule].minutes(units, attempt, self.kinds["gpu"].max_runtime)

    def capped(self, rule: str, units: int) -> bool:
        """Whether the first attempt's walltime is cut to the GPU partition's limit."""
        w = self.walltime[rule]
        return max(w.floor_min, math.ceil(units * w.per_unit_min)) > self.kinds["gpu"].max_runtime


def _number(value: Any, field: str, kind: type) -> int | float:
    try:
        number = kind(value) if kind is float else int(str(value))
    except (TypeError, ValueError):
        number = None
    if number is None or number <= 0:
        raise user_error(SOURCE, field, f"{value!r} is not a positive {kind.__name__}", "set a positive number")
    return number


def _mapping(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise user_error(SOURCE, field, f"expected a mapping, got {value!r}", "see profiles/leonardo/config.yaml")
    return value


def _kind(name: str, raw: Any) -> JobKind:
    raw = dict(_mapping(raw, name))
    if "max_runtime" not in raw:
        raise user_error(SOURCE, f"{name}.max_runtime", "missing", "set the partition's walltime limit in minutes")
    values = {k: _number(v, f"{name}.{k}", int) if k in _INT_KEYS else str(v) for k, v in raw.items()}
    max_runtime, runtime = values.pop("max_runtime"), values.pop("runtime", None)
    if runtime is not None and runtime > max_runtime:
        raise user_error(SOURCE, f"{name}.runtime", f"{runtime} > max_runtime ({max_runtime})", "lower it")
    return JobKind(resources=values, max_runtime=max_runtime, runtime=runtime)


def parse_cluster(raw: Any) -> Cluster | None:
    """The profile's ``cluster`` mapping checked and typed; None without one (local profiles)."""
    if raw is None:
        return None
    raw = _mapping(raw, "cluster")
    unknown = set(raw) - {*KINDS, "walltime"}
    if unknown:
        raise user_error(SOURCE, ", ".join(sorted(unknown)), "unknown key", f"use {', '.join(KINDS)} and walltime")
    missing = [k for k in (*KINDS, "walltime") if k not in raw]
    if missing:
        raise user_error(SOURCE, missing[0], "missing", "see profiles/leonardo/config.yaml")
    walltime = _mapping(raw["walltime"], "walltime")
    if set(walltime) != set(WALLTIME_UNITS):
        raise user_error(SOURCE, "walltime", f"has {sorted(walltime)}", f"set exactly {sorted(WALLTIME_UNITS)}")
    sized = {}
    for rule, spec in walltime.items():
        spec = _mapping(spec, f"walltime.{rule}")
        if set(spec) != {"per_unit_min", "floor_min"}:
            raise user_error(SOURCE, f"walltime.{rule}", f"has {sorted(spec)}", "set per_unit_min and floor_min")
        sized[rule] = Walltime(
            per_unit_min=_number(spec["per_unit_min"], f"walltime.{rule}.per_unit_min", float),
            floor_min=_number(spec["floor_min"], f"walltime.{rule}.floor_min", int),
        )
    return Cluster(kinds={k: _kind(k, raw[k]) for k in KINDS}, walltime=sized)
