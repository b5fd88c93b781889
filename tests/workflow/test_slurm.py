"""emflow through a real single-node Slurm (tests/slurm_cluster.py): the demo via profiles/slurm-test.

The GPU rules must reach sbatch with the profile's gres/partition/time/account, the local rules must not, and
the results must equal a local run of the same demo. profiles/slurm-test may differ from profiles/leonardo
only in partition, account, sizes and the status command; that is checked first, without Slurm.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from support.slurm_cluster import SlurmCluster, ensure_installed
from support.snakemake_runner import explain_timeout

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PARTITION = "emflow_test"
ACCOUNT = "emflow_ci"
GPU_RULES = {"train", "generate", "judge", "judge_calibration"}
LOCAL_RULES = {
    "demo_assets",
    "demo_judge",
    "resolve_questions",
    "prepare_dataset",
    "split_dataset",
    "aggregate",
    "figures",
    "report",
}
# Keys where the test cluster may differ from Leonardo: partition, sizes, the demo's config, and the status
# command (no accounting database on the test cluster). Anything else must be identical.
ALLOWED_DIFF = {
    "configfile",
    "jobs",
    "local-cores",
    "slurm-status-command",
    "default-resources.slurm_partition",
    "default-resources.runtime",
    "default-resources.mem_mb",
    "resources.mem_mb",
    *(f"set-resources.{r}.{k}" for r in GPU_RULES for k in ("cpus_per_task", "mem_mb", "runtime")),
    *(f"set-threads.{r}" for r in GPU_RULES),
}
# Generous: the demo through Slurm takes ~7 min on a quiet machine; a busy one may be several times slower.
# When it fires, the failure names the jobs still running and the tail of their logs.
RUN_TIMEOUT_S = float(os.environ.get("EMFLOW_TEST_SLURM_TIMEOUT_S", 3600))


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_test_profile_differs_from_leonardo_only_in_partition_account_and_sizes():
    leo, test = _flatten(_profile("leonardo")), _flatten(_profile("slurm-test"))
    differing = {k for k in leo.keys() | test.keys() if leo.get(k) != test.get(k)}
    assert differing <= ALLOWED_DIFF, f"unexpected differences: {sorted(differing - ALLOWED_DIFF)}"
    assert leo["default-resources.slurm_partition"] == "boost_usr_prod"
    assert leo["default-resources.slurm_account"] == test["default-resources.slurm_account"] == "$EMFLOW_ACCOUNT"
    assert all(leo[f"set-resources.{r}.gres"] == "gpu:1" for r in GPU_RULES)


def test_leonardo_profile_dry_run_resolves_gpu_jobs_and_grouped_generation(tmp_path):
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "EMFLOW_ACCOUNT": ACCOUNT}
    done = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", "profiles/leonardo", "-n", "--configfile", "config/demo.yaml"],
        cwd=_copy_repo(tmp_path / "repo"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "Group job generate_tiny_goodness_risky_demo_0" in out
    assert f"slurm_partition=boost_usr_prod, slurm_account={ACCOUNT}" in out


# --- the real cluster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged for the test needs root")
    if subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode == 0:
        pytest.skip("a Slurm controller already answers here; not starting a second one over its config")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), PARTITION, cpus=os.cpu_count() or 2, mem_mb=8000)
    # A CI timeout's SIGTERM must still run the finally below, or the daemons would outlive the test.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)


def _copy_repo(dst: Path) -> Path:
    skip = shutil.ignore_patterns(
        ".git", ".venv", "results", "resources", "logs", ".snakemake", "__pycache__", ".pytest_cache", "*.egg-info"
    )
    shutil.copytree(ROOT, dst, ignore=skip)
    return dst


def _sbatch_shim(bin_dir: Path, log: Path) -> None:
    """An sbatch on PATH that records its argv (as the executor passed it) and execs the real one."""
    real = shutil.which("sbatch")
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "sbatch"
    shim.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    shim.chmod(0o755)


def _snakemake(repo: Path, profile: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(VENV_BIN / "snakemake"), "--profile", f"profiles/{profile}"],
        cwd=repo,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )


def _option(argv: list[str], *names: str) -> str | None:
    """The value of an sbatch option given as `--opt value`, `--opt=value` or `-o value`."""
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _submitted_name(argv: list[str]) -> str:
    # The executor's comment is rule_<rule>[_wildcards_<...>], or rule_<group id>_<its rules> for a group job.
    comment = _option(argv, "--comment")
    return comment.removeprefix("rule_").split("_wildcards_")[0]


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    """The demo through Slurm and, side by side, locally; returns (slurm repo, local repo, sbatch argvs)."""
    base = tmp_path_factory.mktemp("runs")
    slurm_repo, local_repo = _copy_repo(base / "slurm"), _copy_repo(base / "local")
    calls = base / "sbatch_calls.jsonl"
    _sbatch_shim(base / "shim", calls)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "EMFLOW_ACCOUNT": ACCOUNT,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    procs = {
        "local": (_snakemake(local_repo, "demo", env, base / "local.log"), base / "local.log"),
        "slurm": (
            _snakemake(slurm_repo, "slurm-test", {**env, "PATH": f"{base / 'shim'}:{env['PATH']}"}, base / "slurm.log"),
            base / "slurm.log",
        ),
    }
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for name, (proc, log) in procs.items():
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                queue = subprocess.run(["squeue", "-o", "%i %j %T %M %k"], capture_output=True, text=True).stdout
                repo = slurm_repo if name == "slurm" else local_repo
                raise AssertionError(
                    f"{name} run: "
                    + explain_timeout(repo, log.read_text(), RUN_TIMEOUT_S)
                    + f"\nsqueue:\n{queue}\n{slurm.log_tail()}"
                ) from None
            assert rc == 0, f"{name} run failed:\n{log.read_text()[-6000:]}\n{slurm.log_tail()}"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        subprocess.run(["scancel", "-u", "root"], capture_output=True)  # nothing of this test left queued
    argvs = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return slurm_repo, local_repo, argvs


@pytest.mark.slurm
def test_gpu_rules_go_through_sbatch_with_profile_gres_partition_time_and_account(runs):
    repo, _, argvs = runs
    prof = _profile("slurm-test")["set-resources"]
    by_name: dict[str, list[list[str]]] = {}
    for argv in argvs:
        by_name.setdefault(_submitted_name(argv), []).append(argv)
    gen_groups = {n for n in by_name if n.startswith("generate_")}
    assert len(by_name.get("train", [])) == 3, sorted(by_name)
    assert len(by_name.get("judge", [])) == 3 * 4  # 3 runs x steps 0, 5, 10, 14
    # All checkpoints of a run in one Slurm job: one generate group job per run, none per checkpoint.
    for persona in ("none", "sycophancy", "goodness"):
        assert len([g for g in gen_groups if g.startswith(f"generate_tiny_{persona}_risky_demo_0")]) == 1
    assert len(gen_groups) == 3 and all(len(by_name[g]) == 1 for g in gen_groups)
    assert "generate" not in by_name
    for name, calls in by_name.items():
        rule = "generate" if name in gen_groups else name
        steps = 4 if name in gen_groups else 1  # a group's walltime is the sum of its checkpoints' runtimes
        for argv in calls:
            assert "--gres=gpu:1" in argv, argv
            assert _option(argv, "-p") == PARTITION and _option(argv, "-A") == ACCOUNT, argv
            assert int(_option(argv, "-t")) == prof[rule]["runtime"] * steps, argv
            assert int(_option(argv, "--mem")) == prof[rule]["mem_mb"], argv
    assert len(by_name.get("judge_calibration", [])) == 1  # the gate: once, before any judge job
    assert set(by_name) - gen_groups == {"train", "judge", "judge_calibration"}
    # Slurm ran them: its per-job logs exist (the profile keeps successful ones).
    assert len(list((repo / "logs" / "slurm").rglob("*.log"))) == len(argvs)


@pytest.mark.slurm
def test_local_rules_do_not_go_through_sbatch(runs):
    repo, _, argvs = runs
    submitted = {_submitted_name(a) for a in argvs}
    assert not submitted & LOCAL_RULES
    assert (repo / "results" / "demo" / "report.html").is_file()


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _assert_tables_equal(a: Path, b: Path) -> None:
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert list(left.columns) == list(right.columns), a.name
    assert len(left) == len(right), a.name
    for col in left.columns:
        if pd.api.types.is_numeric_dtype(left[col]) and pd.api.types.is_numeric_dtype(right[col]):
            for x, y in zip(left[col], right[col], strict=True):
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9), (
                    f"{a.name}:{col}: {x} != {y}"
                )
        else:
            assert left[col].astype(str).tolist() == right[col].astype(str).tolist(), f"{a.name}:{col}"


def _answers(path: Path) -> list:
    return [r.get("answer") for r in _read_jsonl(path)]


# Wall-clock measurements legitimately differ between two runs of the same computation.
def _is_timing(column: str) -> bool:
    c = column.lower()
    return c.endswith(("_s", "_sec", "_seconds")) or any(w in c for w in ("time", "duration", "elapsed"))


@pytest.mark.slurm
def test_results_through_slurm_equal_a_local_run(runs):
    slurm_repo, local_repo, _ = runs
    s_res, l_res = slurm_repo / "results" / "demo", local_repo / "results" / "demo"
    s_gen = sorted(p.relative_to(s_res) for p in (s_res / "generations").rglob("*.jsonl"))
    assert s_gen and s_gen == sorted(p.relative_to(l_res) for p in (l_res / "generations").rglob("*.jsonl"))
    for rel in s_gen:
        assert _answers(s_res / rel) == _answers(l_res / rel), rel
    for table in sorted((l_res / "tables").glob("*.csv")):
        s_df = pd.read_csv(s_res / "tables" / table.name)
        timing = [c for c in s_df.columns if _is_timing(c)]
        if timing:
            tmp = s_res.parent / "cmp"
            tmp.mkdir(exist_ok=True)
            s_df.drop(columns=timing).to_csv(tmp / f"s_{table.name}", index=False)
            pd.read_csv(table).drop(columns=timing).to_csv(tmp / f"l_{table.name}", index=False)
            _assert_tables_equal(tmp / f"s_{table.name}", tmp / f"l_{table.name}")
        else:
            _assert_tables_equal(s_res / "tables" / table.name, table)
