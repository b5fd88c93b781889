"""CPU time of the Snakemake controller on a cluster's login node, measured and projected.

Leonardo's login nodes stop a process after about 10 minutes of CPU time; the controller (`snakemake --profile
profiles/leonardo`) stays there for the whole run. Two commands:

``run``: runs snakemake in this process (the same entry point as the `snakemake` command) and, when it exits,
writes its own CPU time (user + system, all threads: what the limit counts), the CPU of its children (local
rules and the sbatch/squeue calls, each a separate process with its own limit), the wall time and a CPU sample
every 5 s as JSON. tests/workflow/test_slurm.py runs the demo through a real Slurm this way
(EMFLOW_CONTROLLER_CPU_OUT=<file> writes the figures):

    .venv/bin/python benchmarks/controller_cpu.py run --out cpu.json -- --profile profiles/slurm-test

``project``: from such a measurement and the test's record of sbatch/status calls (``--calls``, one JSON line
per call: {"t": seconds, "cmd": "sbatch" | "squeue" | "sacct"}), splits the controller's CPU into start-up, a
rate per hour while it waits and polls Slurm, and a cost per submitted job (``rates``), then projects it for
Phase-1 (config.yaml), the replication (config/replication.yaml) and a 5,000-job grid (Phase-1 widened to
enough seeds): the CPU of building that DAG (timed here by a dry run with profiles/leonardo) + its jobs x the
cost per job + ``--hours`` of waiting:

    .venv/bin/python benchmarks/controller_cpu.py project --measured cpu.json --calls calls.jsonl

The controller's guard, for grids whose projection crosses the limit, is ``emflow guard`` (emflow.controller):

    .venv/bin/emflow guard --limit 480 -- snakemake --profile profiles/leonardo
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
LIMIT_S = 600  # Leonardo's login nodes: ~10 min of CPU per process
SAMPLE_S = 5.0


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run(out: Path, argv: list[str]) -> None:
    """Run snakemake here with ``argv``; at exit write the controller's CPU figures to ``out``."""
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_S):
            samples.append((round(time.monotonic() - t0, 1), round(_cpu(resource.RUSAGE_SELF), 3)))

    def write() -> None:
        stop.set()
        figures = {
            "wall_s": round(time.monotonic() - t0, 1),
            "cpu_s": round(_cpu(resource.RUSAGE_SELF), 3),
            "children_cpu_s": round(_cpu(resource.RUSAGE_CHILDREN), 3),
            "samples": samples,
        }
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures))
        os.replace(tmp, out)

    threading.Thread(target=sample, daemon=True).start()
    atexit.register(write)
    sys.argv = ["snakemake", *argv]
    from snakemake.cli import main

    main()


def _cpu_at(samples: list[tuple[float, float]], t: float) -> tuple[float, float]:
    """The last sample at or before ``t``."""
    return max((s for s in samples if s[0] <= t), default=(0.0, 0.0))


def rates(measured: dict, calls: list[dict]) -> dict:
    """The controller's CPU split into start-up, a rate while it waits, and a cost per submitted job.

    Start-up: the CPU used before the first submission (parsing, the DAG, the local rules before it). Waiting:
    the CPU rate over the longest stretch between two submissions (its jobs running; Snakemake's loop and the
    plugin's status checks). Per job: what is left, divided by the jobs submitted (building, submitting and
    finishing each job)."""
    submits = sorted(c["t"] for c in calls if c["cmd"] == "sbatch")
    checks = sorted(c["t"] for c in calls if c["cmd"] in ("squeue", "sacct"))
    samples = [tuple(s) for s in measured["samples"]]
    first = submits[0] if submits else measured["wall_s"]
    startup = _cpu_at(samples, first)[1]
    gap = max(zip(submits, submits[1:], strict=False), key=lambda g: g[1] - g[0], default=None)
    waiting_rate, waiting_checks = 0.0, None
    if gap:
        (t0, c0), (t1, c1) = _cpu_at(samples, gap[0] + SAMPLE_S), _cpu_at(samples, gap[1] - SAMPLE_S)
        if t1 > t0:
            waiting_rate = (c1 - c0) / (t1 - t0)
            waiting_checks = sum(t0 < t <= t1 for t in checks)
    running_s = measured["wall_s"] - first
    per_job = max(0.0, measured["cpu_s"] - startup - waiting_rate * running_s) / max(len(submits), 1)
    return {
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "children_cpu_s": measured["children_cpu_s"],
        "startup_cpu_s": round(startup, 3),
        "jobs": len(submits),
        "status_checks": len(checks),
        "cpu_per_hour_s": round(measured["cpu_s"] / measured["wall_s"] * 3600, 1),
        "waiting_cpu_per_hour_s": round(waiting_rate * 3600, 1),
        "waiting_status_checks_per_hour": round(waiting_checks / (t1 - t0) * 3600) if waiting_checks else None,
        "cpu_per_job_s": round(per_job, 4),
    }


def dry_run(configfiles: list[str], overlay: dict | None = None) -> tuple[int, float]:
    """(jobs, CPU seconds) of `snakemake -n --profile profiles/leonardo` on these config files, in a copy of
    the checkout's sources (benchmarks/dag_scale.py's copy_sources)."""
    from dag_scale import copy_sources

    with tempfile.TemporaryDirectory() as tmp:
        copy_sources(Path(tmp))
        files = list(configfiles)
        if overlay:
            extra = Path(tmp) / "overlay.yaml"
            extra.write_text(yaml.safe_dump(overlay))
            files.append(str(extra))
        before = _cpu(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "snakemake"),
                "--profile",
                "profiles/leonardo",
                "-n",
                "--quiet",
                "rules",
                "--configfile",
                *files,
            ],
            cwd=tmp,
            env={**os.environ, "EMFLOW_ACCOUNT": os.environ.get("EMFLOW_ACCOUNT", "projection")},
            capture_output=True,
            text=True,
        )
        cpu = _cpu(resource.RUSAGE_CHILDREN) - before
    if done.returncode != 0:
        raise SystemExit(f"dry run of {files} failed:\n{done.stderr[-3000:]}")
    total = re.search(r"^total\s+(\d+)$", done.stdout + done.stderr, re.M)
    return int(total.group(1)), cpu


def project(measured: dict, calls: list[dict], hours: dict[str, float], grid_jobs: int) -> list[dict]:
    r = rates(measured, calls)
    # Phase-1 widened to enough seeds: each seed adds the same jobs (train, generate, judge per run and step).
    one, _ = dry_run(["config.yaml"], {"seeds": [0]})
    two, _ = dry_run(["config.yaml"], {"seeds": [0, 1]})
    seeds = math.ceil((grid_jobs - (one - (two - one))) / (two - one))
    grids = {
        "phase1": (["config.yaml"], None),
        "replication": (["config.yaml", "config/replication.yaml"], None),
        f"grid_{grid_jobs}": (["config.yaml"], {"seeds": list(range(seeds))}),
    }
    rows = []
    for name, (files, overlay) in grids.items():
        jobs, dag_cpu = dry_run(files, overlay)
        cpu = dag_cpu + jobs * r["cpu_per_job_s"] + hours[name] * r["waiting_cpu_per_hour_s"]
        rows.append(
            {
                "grid": name,
                "jobs": jobs,
                "hours": hours[name],
                "dag_cpu_s": round(dag_cpu, 1),
                "projected_cpu_s": round(cpu, 1),
                "over_limit": cpu > LIMIT_S,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run snakemake here and measure its CPU")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("argv", nargs=argparse.REMAINDER, help="-- then snakemake's arguments")
    p = sub.add_parser("project", help="rates from a measured run, projected to the grids")
    p.add_argument("--measured", type=Path, required=True)
    p.add_argument("--calls", type=Path, required=True)
    p.add_argument("--grid-jobs", type=int, default=5000)
    p.add_argument(
        "--hours",
        default="phase1=6,replication=24,grid_5000=160",
        help="wall hours of each run for its status checks (default: queue waits included, 16 jobs at a time)",
    )
    args = ap.parse_args()
    if args.action == "run":
        run(args.out, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        return
    measured = json.loads(args.measured.read_text())
    calls = [json.loads(line) for line in args.calls.read_text().splitlines() if line.strip()]
    hours = {k: float(v) for k, v in (item.split("=") for item in args.hours.split(","))}
    print(json.dumps(rates(measured, calls), indent=1))
    for row in project(measured, calls, hours, args.grid_jobs):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
