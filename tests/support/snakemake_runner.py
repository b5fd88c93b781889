"""Run Snakemake from a test with a wall-clock limit that explains itself.

When the limit fires, the failure names every job Snakemake had started but not finished, with the tail of
each one's log, so a slow or stuck machine reads differently from a broken pipeline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["Snakefile", "config.yaml", "config", "profiles", "envs", "workflow"]


def copy_sources(dst: Path) -> Path:
    """A copy of the workflow sources, so runs never touch the developer's results/, resources/ or .snakemake/."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst / name)
    return dst


JOB_RE = re.compile(r"^(?:local)?rule (\w+):\n(.*?)^\s+jobid: (\d+)", re.M | re.S)
FINISHED_RE = re.compile(r"Finished jobid: (\d+)")


def unfinished_jobs(output: str) -> list[dict]:
    """Jobs started in ``output`` (Snakemake's log) without a matching "Finished jobid"."""
    finished = set(FINISHED_RE.findall(output))
    jobs = []
    for m in JOB_RE.finditer(output):
        if m[3] in finished:
            continue
        body = m[2]
        log = re.search(r"^\s+log: (.+)$", body, re.M)
        wildcards = re.search(r"^\s+wildcards: (.+)$", body, re.M)
        jobs.append(
            {
                "rule": m[1],
                "jobid": m[3],
                "log": log[1].split(",")[0].strip() if log else None,
                "wildcards": wildcards[1] if wildcards else "",
            }
        )
    return jobs


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


def explain_timeout(cwd: Path, output: str, timeout: float) -> str:
    parts = [f"snakemake ran past {timeout:.0f}s; jobs still running:"]
    for job in unfinished_jobs(output) or [
        {"rule": "(none found in the log)", "jobid": "-", "log": None, "wildcards": ""}
    ]:
        parts.append(f"- {job['rule']} (jobid {job['jobid']}) {job['wildcards']}")
        if job["log"]:
            parts.append("  " + tail(cwd / job["log"]).replace("\n", "\n  "))
    parts.append("snakemake's own output (tail):\n" + "\n".join(output.splitlines()[-20:]))
    return "\n".join(parts)


def run_snakemake(cwd: Path, *args: str, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """(exit status, stdout+stderr); raises AssertionError naming the running jobs when ``timeout`` fires."""
    base = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "PYTHONHASHSEED": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(explain_timeout(Path(cwd), out or "", timeout)) from None
    return proc.returncode, out


# Generous: the demo takes ~2-3 min on two quiet cores; a busy machine may be several times slower. When it
# fires, the failure names the jobs still running and the tail of their logs.
TIMEOUT_S = float(os.environ.get("EMFLOW_TEST_DEMO_TIMEOUT_S", 2400))


def snakemake(cwd: Path, *args: str, timeout: float = TIMEOUT_S) -> str:
    # The demo archive's password comes from its public default, whatever the developer's shell exports.
    rc, out = run_snakemake(cwd, *args, timeout=timeout, env={"EMFLOW_DEMO_PASSWORD": ""})
    assert rc == 0, out[-6000:]
    return out


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run: rule name → number of jobs."""
    table = dry_run_output.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M) if m[1] != "total"}
