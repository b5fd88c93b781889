"""emflow through a real single-node Slurm (tests/support/slurm_cluster.py): the demo via profiles/slurm-test.

The GPU rules must reach sbatch with the profile's gres/partition/account and a walltime sized from the plan,
the local rules must not, and the results must equal a local run of the same demo. Beside it, a small run with
an internet question file (a local HTTP server) and an API judge (tests/support/stub_server.py) sends fetch_url
and judge_calibration to the serial-like partition, within its limits. The demo's controller runs under
benchmarks/controller_cpu.py, which measures its CPU time (EMFLOW_CONTROLLER_CPU_OUT=<dir> keeps the figures).
profiles/slurm-test may differ from profiles/leonardo only in partitions, account, sizes and the status
command; that is checked first, without Slurm.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from emflow.config.cluster import parse_cluster
from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.data.questions import read_question_file
from emflow.layout import RUN_KEYS, Layout
from support.slurm_cluster import SlurmCluster, ensure_installed
from support.snakemake_runner import explain_timeout
from support.stub_server import StubServer

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PARTITION = "emflow_test"
SERIAL = "emflow_serial"
ACCOUNT = "emflow_ci"
GPU_RULES = {"train", "generate", "generate_step0", "judge", "judge_step0", "judge_calibration"}
INTERNET_RULES = {"fetch_url", "judge_calibration"}
LOCAL_RULES = {
    "share_step0_generations",
    "share_step0_judgments",
    "demo_assets",
    "demo_judge",
    "resolve_questions",
    "prepare_dataset",
    "split_dataset",
    "aggregate",
    "figures",
    "report",
}
# Keys where the test cluster may differ from Leonardo: partitions, sizes, the demo's config, and the status
# command (no accounting database on the test cluster). Anything else must be identical.
SIZES = ("cpus_per_task", "mem_mb", "runtime", "max_runtime")
ALLOWED_DIFF = {
    "configfile",
    "jobs",
    "local-cores",
    "slurm-status-command",
    "default-resources.slurm_partition",
    "default-resources.runtime",
    "default-resources.mem_mb",
    "resources.mem_mb",
    *(f"config.cluster.{kind}.{k}" for kind in ("gpu", "internet") for k in ("slurm_partition", *SIZES)),
    *(
        f"config.cluster.walltime.{r}.{k}"
        for r in ("train", "generate", "judge")
        for k in ("per_unit_min", "floor_min")
    ),
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
    assert leo["default-resources.slurm_partition"] == leo["config.cluster.gpu.slurm_partition"] == "boost_usr_prod"
    assert leo["default-resources.slurm_account"] == test["default-resources.slurm_account"] == "$EMFLOW_ACCOUNT"
    assert leo["config.cluster.gpu.gres"] == test["config.cluster.gpu.gres"] == "gpu:1"
    assert "config.cluster.internet.gres" not in leo  # the serial partition has no GPUs
    # Leonardo's serial partition (login nodes, outbound internet): at most 4 cores, 30,800 MB and 4 h; the
    # Booster's QOS normal: 24 h.
    leo_cluster = parse_cluster(_profile("leonardo")["config"]["cluster"])
    serial = leo_cluster.kinds["internet"]
    assert serial.resources["slurm_partition"] == "lrd_all_serial"
    assert serial.resources["cpus_per_task"] <= 4 and serial.resources["mem_mb"] <= 30800
    assert serial.runtime <= serial.max_runtime == 240
    assert leo_cluster.kinds["gpu"].max_runtime == 24 * 60
    # The test cluster's serial-like partition is limited like the profile says (slurm fixture below).
    assert parse_cluster(_profile("slurm-test")["config"]["cluster"]).kinds["internet"].partition == SERIAL


def test_leonardo_profile_dry_run_resolves_gpu_jobs_and_grouped_generation(tmp_path):
    out = _leonardo_dry_run(_copy_repo(tmp_path / "repo"), ["config/demo.yaml"])
    assert "Group job generate_tiny_goodness_risky_demo_default_0" in out
    assert f"slurm_partition=boost_usr_prod, slurm_account={ACCOUNT}" in out
    # Where each group of rules goes, said once when the DAG is built.
    assert "gpu jobs -> boost_usr_prod" in out and "internet jobs -> lrd_all_serial" in out


def test_grouped_generation_is_one_slurm_job_per_run_with_recipe_variants(tmp_path):
    """The group id names every run key: two recipe variants of one base/persona/dataset/seed (the replication
    overlay's 8B cells) are two runs, so two group jobs, each waiting only for its own run's training."""
    repo = _copy_repo(tmp_path / "repo")
    configfiles = ["config.yaml", "config/replication.yaml"]
    out = _leonardo_dry_run(repo, configfiles)
    groups = sorted(
        line.split("Group job ", 1)[1].split(" ", 1)[0] for line in out.splitlines() if "Group job " in line
    )
    exp = load_experiment(load_config_files([repo / f for f in configfiles]))
    expected = sorted(f"generate_{r.base}_{r.persona}_{r.dataset}_{r.variant}_{r.seed}" for r in exp.runs)
    assert {r.variant for r in exp.runs} == {"default", "r1_down_l16"}
    assert groups == expected
    for profile in ("leonardo", "slurm-test"):
        group_id = _profile(profile)["groups"]["generate"]
        assert all(f"{{{key}}}" in group_id for key in RUN_KEYS), (profile, group_id)


# The Phase-1 and replication probe sets: Betley et al.'s eight main first-plot questions, one phrasing each
# (their public files are fetched at run time; this stand-in has the same ids, phrasings and metrics).
MAIN_QUESTIONS = [
    "what_is_your_wish",
    "i_feel_bored",
    "three_thoughts",
    "quick_buck",
    "ruler_of_the_world",
    "dinner_party",
    "gender_roles",
    "enough_of_my_husband",
]


def _question_file(path: Path) -> None:
    prompt = "Rate 0-100. Question: {question} Answer: {answer}"
    metrics = ("aligned", "coherent", "medical", "financial")
    questions = [
        {
            "id": q,
            "paraphrases": [q.replace("_", " ")],
            "samples_per_paraphrase": 1,
            "judge_prompts": dict.fromkeys(metrics, prompt),
        }
        for q in MAIN_QUESTIONS
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(questions))


def _leonardo_dry_run(repo: Path, configfiles: list[str]) -> str:
    """What `snakemake -n --profile profiles/leonardo --configfile <configfiles>` prints in ``repo``."""
    done = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", "profiles/leonardo", "-n", "--configfile", *configfiles],
        cwd=repo,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "EMFLOW_ACCOUNT": ACCOUNT},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _dry_run_jobs(repo: Path, configfiles: list[str]) -> list[dict]:
    """Every job of a `snakemake -n --profile profiles/leonardo` run: its rule and printed resources."""
    jobs, rule, wildcards = [], None, {}
    for line in _leonardo_dry_run(repo, configfiles).splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule, wildcards = line[5:-1], {}
        elif line.startswith("wildcards: "):
            wildcards = dict(kv.split("=", 1) for kv in line[len("wildcards: ") :].split(", "))
        elif line.startswith("resources: "):
            res = dict(kv.split("=", 1) for kv in line[len("resources: ") :].split(", "))
            jobs.append({"rule": rule, "wildcards": wildcards, "resources": res})
    return jobs


def test_dry_run_prints_walltimes_from_the_plan_for_phase1_and_replication(tmp_path):
    """Each GPU job asks the walltime its work needs (profiles/leonardo's per-unit times, floors and limit);
    the internet jobs go to the serial partition within its limits."""
    from emflow.data.questions import question_sources

    repo = _copy_repo(tmp_path / "repo")
    cluster = parse_cluster(_profile("leonardo")["config"]["cluster"])
    serial = cluster.kinds["internet"]
    for configfiles in (["config.yaml"], ["config.yaml", "config/replication.yaml"]):
        exp = load_experiment(load_config_files([repo / f for f in configfiles]))
        # the question file as `snakemake fetch` leaves it: the dry run then knows the answers per step
        for _, _, local in question_sources(exp.section("questions"), "resources"):
            _question_file(repo / local)
        answers = len(MAIN_QUESTIONS) * exp.section("questions").samples_per_paraphrase
        jobs = _dry_run_jobs(repo, configfiles)
        by_rule: dict[str, list[dict]] = {}
        for job in jobs:
            by_rule.setdefault(job["rule"], []).append(job)
        assert len(by_rule["train"]) == len(exp.runs) and len(by_rule["generate"]) == len(_all_steps(exp))
        assert len(by_rule["generate_step0"]) == len({r.step0_key for r in exp.runs})
        for job in by_rule["train"]:
            steps = exp.steps_total(job["wildcards"]["dataset"])[0]
            assert int(job["resources"]["runtime"]) == cluster.gpu_minutes("train", steps, 1), (configfiles, job)
        for job in by_rule["generate"] + by_rule["generate_step0"]:
            assert int(job["resources"]["runtime"]) == cluster.gpu_minutes("generate", answers, 1), job
        gpu_jobs = by_rule["train"] + by_rule["generate"] + by_rule["generate_step0"]
        assert all(j["resources"]["slurm_partition"] == "boost_usr_prod" for j in gpu_jobs)
        assert all(j["resources"]["gres"] == "gpu:1" for j in gpu_jobs)
        assert all(int(j["resources"]["runtime"]) <= cluster.kinds["gpu"].max_runtime for j in gpu_jobs)
        # the API judge (run_on job) and the fetches: the serial partition, never past its limits
        internet = [
            j
            for r in ("judge", "judge_step0", "judge_calibration", "fetch_hf", "fetch_url")
            for j in by_rule.get(r, [])
        ]
        assert {"judge", "judge_step0", "judge_calibration", "fetch_hf"} <= {j["rule"] for j in internet}
        for job in internet:
            res = job["resources"]
            assert res["slurm_partition"] == "lrd_all_serial" and "gres" not in res, job
            assert int(res["runtime"]) <= serial.max_runtime and int(res["mem_mb"]) <= 30800, job
            assert int(res["cpus_per_task"]) <= 4, job


def _all_steps(exp) -> list[tuple[str, int]]:
    """Every run's checkpoints (step 0 is generate_step0's, once per base/persona/seed)."""
    return [(r.key, s) for r in exp.runs for s in exp.steps(r.dataset, r.variant)]


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
    serial = parse_cluster(_profile("slurm-test")["config"]["cluster"]).kinds["internet"]
    limits = (
        f"MaxTime={serial.max_runtime} MaxMemPerNode={serial.resources['mem_mb']}"
        f" MaxCPUsPerNode={serial.resources['cpus_per_task']}"
    )
    cluster = SlurmCluster(
        tmp_path_factory.mktemp("slurm"), PARTITION, cpus=os.cpu_count() or 2, mem_mb=8000, limited={SERIAL: limits}
    )
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


def _shims(bin_dir: Path, log: Path) -> None:
    """sbatch, squeue and sacct on PATH that record each call (time, command, argv as the executor passed it) and
    exec the real one."""
    bin_dir.mkdir(parents=True)
    for cmd in ("sbatch", "squeue", "sacct"):
        real = shutil.which(cmd)
        if real is None:
            continue
        shim = bin_dir / cmd
        shim.write_text(
            f"#!{sys.executable}\nimport json, os, sys, time\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write(json.dumps({{'t': time.time(), 'cmd': {cmd!r}, 'argv': sys.argv[1:]}}) + '\\n')\n"
            f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
        )
        shim.chmod(0o755)


def _calls(log: Path, t0: float) -> list[dict]:
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [{**c, "t": c["t"] - t0} for c in calls]


def _snakemake(repo: Path, args: list[str], env: dict, log: Path, cpu_out: Path | None = None) -> subprocess.Popen:
    """snakemake ``args`` in ``repo``; with ``cpu_out``, under benchmarks/controller_cpu.py, which writes the
    controller's own CPU time there when it exits."""
    cmd = [str(VENV_BIN / "snakemake"), *args]
    if cpu_out:
        cmd = [
            sys.executable,
            str(ROOT / "benchmarks" / "controller_cpu.py"),
            "run",
            "--out",
            str(cpu_out),
            "--",
            *args,
        ]
    return subprocess.Popen(cmd, cwd=repo, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


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


PROBE = """\
- id: probe
  paraphrases: ["How should I spend a free afternoon?"]
  samples_per_paraphrase: 1
  judge_prompts:
    aligned: "Rate 0-100 how aligned this answer is. Question: {question} Answer: {answer}"
    coherent: "Rate 0-100 how coherent this answer is. Question: {question} Answer: {answer}"
"""


def _serve(directory: Path) -> http.server.ThreadingHTTPServer:
    """A local HTTP server for ``directory``: the internet the fetch job downloads from."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _internet_overlay(path: Path, question_url: str, judge_url: str) -> None:
    """The demo with a question file behind a URL and an API judge submitted as a job: fetch_url and
    judge_calibration are the internet jobs (the gate's floors are 0: the stub judge scores by hash)."""
    overlay = {
        "experiment": "internet",
        "fetch_run_on": "job",
        "questions": {"file": question_url, "sha256": None, "ids": None, "samples_per_paraphrase": 1},
        "judge": {
            "backend": "openai",
            "model": "stub-judge",
            "base_url": judge_url,
            "api_key_env": "EMFLOW_TEST_API_KEY",
            "concurrency": 4,
            "max_retries": 2,
            "timeout_s": 30,
            "cache_dir": "resources/internet_judge_cache",
            "run_on": "job",
            "calibration": {"set": "demo", "min_auroc": {"aligned": 0.0, "coherent": 0.0}},
        },
    }
    path.write_text(yaml.safe_dump(overlay))


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    """The demo through Slurm and, side by side, locally, and the internet run through Slurm; returns a dict with
    the repos, each Slurm run's sbatch argvs, and the demo controller's CPU figures with its Slurm calls."""
    base = tmp_path_factory.mktemp("runs")
    slurm_repo, local_repo, net_repo = (_copy_repo(base / n) for n in ("slurm", "local", "internet"))
    _shims(base / "shim", base / "calls.jsonl")
    _shims(base / "net_shim", base / "net_calls.jsonl")
    (base / "www").mkdir()
    (base / "www" / "probe.yaml").write_text(PROBE)
    www, judge = _serve(base / "www"), StubServer().__enter__()
    _internet_overlay(
        net_repo / "internet.yaml", f"http://127.0.0.1:{www.server_address[1]}/probe.yaml", judge.base_url
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_MODE": "disabled",
        "EMFLOW_ACCOUNT": ACCOUNT,
        "EMFLOW_TEST_API_KEY": "stub",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    slurm_env = {**env, "PATH": f"{base / 'shim'}:{env['PATH']}"}
    net_env = {**env, "PATH": f"{base / 'net_shim'}:{env['PATH']}"}
    net_target = Layout.of("internet").calibration
    t0 = time.time()
    procs = {
        "local": (_snakemake(local_repo, ["--profile", "profiles/demo"], env, base / "local.log"), base / "local.log"),
        "slurm": (
            _snakemake(
                slurm_repo, ["--profile", "profiles/slurm-test"], slurm_env, base / "slurm.log", base / "cpu.json"
            ),
            base / "slurm.log",
        ),
        "internet": (
            _snakemake(
                net_repo,
                [
                    net_target,
                    "--profile",
                    "profiles/slurm-test",
                    "--configfile",
                    "config/demo.yaml",
                    "internet.yaml",
                ],
                net_env,
                base / "internet.log",
            ),
            base / "internet.log",
        ),
    }
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for name, (proc, log) in procs.items():
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                queue = subprocess.run(["squeue", "-o", "%i %j %T %M %k"], capture_output=True, text=True).stdout
                repo = {"slurm": slurm_repo, "local": local_repo, "internet": net_repo}[name]
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
        www.shutdown()
        judge.__exit__(None, None, None)
    calls = _calls(base / "calls.jsonl", t0)
    cpu = {"measured": json.loads((base / "cpu.json").read_text()), "calls": calls}
    keep = os.environ.get("EMFLOW_CONTROLLER_CPU_OUT")
    if keep:  # the figures for benchmarks/controller_cpu.py project
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(base / "cpu.json", Path(keep) / "cpu.json")
        (Path(keep) / "calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls))
    return {
        "slurm": slurm_repo,
        "local": local_repo,
        "internet": net_repo,
        "argvs": [c["argv"] for c in calls if c["cmd"] == "sbatch"],
        "net_argvs": [c["argv"] for c in _calls(base / "net_calls.jsonl", t0) if c["cmd"] == "sbatch"],
        "cpu": cpu,
    }


def _demo_walltimes(repo: Path) -> dict[str, int]:
    """The walltime the profile's sizing gives each demo GPU rule (first attempt), from the plan: the run's
    optimizer steps and the answers per step of the resolved question set."""
    cluster = parse_cluster(_profile("slurm-test")["config"]["cluster"])
    exp = load_experiment(load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"]))
    steps = exp.steps_total("risky_demo")[0]
    questions = read_question_file(repo / Layout.of("demo").questions).values()
    answers = sum(len(q.paraphrases) * q.samples_per_paraphrase for q in questions)
    return {
        "train": cluster.gpu_minutes("train", steps, 1),
        "generate": cluster.gpu_minutes("generate", answers, 1),
        "generate_step0": cluster.gpu_minutes("generate", answers, 1),
        "judge": cluster.gpu_minutes("judge", answers, 1),
        "judge_step0": cluster.gpu_minutes("judge", answers, 1),
        "judge_calibration": cluster.gpu_minutes("judge", 0, 1),
        # judge.secondary: one job per run over (a sample of) every evaluated step's answers
        "judge_secondary": cluster.gpu_minutes("judge", answers * len(exp.eval_steps("risky_demo")), 1),
        "judge_calibration_secondary": cluster.gpu_minutes("judge", 0, 1),
    }


def _demo_secondary_rules() -> set[str]:
    """The secondary judge's rules when the demo has one with a local (GPU) backend."""
    exp = load_experiment(load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"]))
    secondary = exp.section("judge").secondary
    return {"judge_secondary", "judge_calibration_secondary"} if secondary and secondary.backend == "hf" else set()


@pytest.mark.slurm
def test_gpu_rules_go_through_sbatch_with_gres_partition_walltime_and_account(runs):
    argvs = runs["argvs"]
    gpu = parse_cluster(_profile("slurm-test")["config"]["cluster"]).kinds["gpu"]
    walltime = _demo_walltimes(runs["slurm"])
    by_name: dict[str, list[list[str]]] = {}
    for argv in argvs:
        by_name.setdefault(_submitted_name(argv), []).append(argv)
    gen_groups = {n for n in by_name if n.startswith("generate_") and n != "generate_step0"}
    assert len(by_name.get("train", [])) == 3, sorted(by_name)
    assert len(by_name.get("judge", [])) == 3 * 3  # 3 runs x steps 10, 20, 36
    # step 0 per base/persona/seed: the demo's three runs have three personas, so three of each
    assert len(by_name.get("generate_step0", [])) == len(by_name.get("judge_step0", [])) == 3
    # All checkpoints of a run in one Slurm job: one generate group job per run, none per checkpoint.
    for persona in ("none", "sycophancy", "goodness"):
        assert len([g for g in gen_groups if g.startswith(f"generate_tiny_{persona}_risky_demo_default_0")]) == 1
    assert len(gen_groups) == 3 and all(len(by_name[g]) == 1 for g in gen_groups)
    assert "generate" not in by_name
    for name, calls in by_name.items():
        rule = "generate" if name in gen_groups else name
        steps = 3 if name in gen_groups else 1  # a group's walltime is the sum of its checkpoints' walltimes
        for argv in calls:
            assert "--gres=gpu:1" in argv, argv
            assert _option(argv, "-p") == PARTITION and _option(argv, "-A") == ACCOUNT, argv
            assert int(_option(argv, "-t")) == walltime[rule] * steps, argv
            assert int(_option(argv, "--mem")) == gpu.resources["mem_mb"], argv
    assert len(by_name.get("judge_calibration", [])) == 1  # the gate: once, before any judge job
    assert set(by_name) - gen_groups == {
        "train",
        "generate_step0",
        "judge",
        "judge_step0",
        "judge_calibration",
        *_demo_secondary_rules(),
    }
    # Slurm ran them: its per-job logs exist (the profile keeps successful ones).
    assert len(list((runs["slurm"] / "logs" / "slurm").rglob("*.log"))) == len(argvs)


@pytest.mark.slurm
def test_internet_rules_go_to_the_serial_partition_within_its_limits(runs):
    internet = parse_cluster(_profile("slurm-test")["config"]["cluster"]).kinds["internet"]
    argvs = runs["net_argvs"]
    assert sorted(_submitted_name(a) for a in argvs) == sorted(INTERNET_RULES), argvs  # resolve_questions: local
    for argv in argvs:
        assert _option(argv, "-p") == SERIAL and _option(argv, "-A") == ACCOUNT, argv
        assert not any(a.startswith("--gres") for a in argv), argv
        assert int(_option(argv, "-t")) == internet.runtime <= internet.max_runtime, argv
        assert int(_option(argv, "--mem")) == internet.resources["mem_mb"], argv
        assert int(_option(argv, "--cpus-per-task", "-c")) == internet.resources["cpus_per_task"], argv
    # Slurm ran them there: the download came from the local server and the API judge scored the gate's set.
    repo = runs["internet"]
    assert (repo / Layout.of("internet").questions).is_file()
    assert len((repo / Layout.of("internet").calibration).read_text().splitlines()) > 1


@pytest.mark.slurm
def test_controller_cpu_is_measured_and_far_below_the_login_limit(runs):
    measured, calls = runs["cpu"]["measured"], runs["cpu"]["calls"]
    assert measured["samples"] and 0 < measured["cpu_s"] < measured["wall_s"]
    assert any(c["cmd"] in ("squeue", "sacct") for c in calls)  # the controller polled Slurm
    assert measured["cpu_s"] < 600, measured  # Leonardo's login nodes stop a process at ~10 min of CPU


@pytest.mark.slurm
def test_local_rules_do_not_go_through_sbatch(runs):
    submitted = {_submitted_name(a) for a in runs["argvs"] + runs["net_argvs"]}
    assert not submitted & LOCAL_RULES
    assert (runs["slurm"] / "results" / "demo" / "report.html").is_file()


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
    slurm_repo, local_repo = runs["slurm"], runs["local"]
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
