"""Parse and DAG cost of emflow's workflow against a plain Snakefile with the same jobs.

The Phase-1 grid (config.yaml) widened to ``--seeds`` seeds (100: 300 `train`, 1,200 `generate` and 1,200
`judge` jobs, and 300 each of step 0's `generate_step0`, `judge_step0` and its two `share_step0_*` copies) is
dry-run (``snakemake -n``) by emflow's Snakefile and by a plain Snakefile written here: the same rules, wildcards,
outputs, logs, benchmark files and inputs as literal patterns and lists; no params, no input functions, no conda
environment, no config validation. Both are timed alternating, ``--repeats`` times, quiet (``--quiet rules``) and
printing every job (plain ``-n``); the medians and their ratios are printed side by side.
The job counts of both dry runs are checked equal, so the two graphs are the same.

    .venv/bin/python benchmarks/dag_scale.py [--seeds 100] [--repeats 3] [--checkout DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from emflow.config.experiment import load_experiment  # noqa: E402
from emflow.config.files import load_config_files  # noqa: E402
from emflow.layout import RUN, STEP0, Layout  # noqa: E402

SOURCES = ("Snakefile", "config.yaml", "config", "workflow", "profiles")


def copy_sources(dest: Path, checkout: Path = ROOT) -> None:
    for name in SOURCES:
        src = checkout / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


def plain_snakefile(config: dict) -> str:
    """A Snakefile with emflow's jobs and nothing else: literal patterns, expand()ed lists, `shell: "true"`."""
    exp = load_experiment(config)
    lay = Layout.of(exp.name)
    runs = [dict(base=r.base, persona=r.persona, dataset=r.dataset, variant=r.variant, seed=r.seed) for r in exp.runs]
    steps = {(r.dataset, r.variant): exp.eval_steps(r.dataset, r.variant) for r in exp.runs}
    judgments = [lay.judgments(RUN.format(**k), s) for k in runs for s in steps[k["dataset"], k["variant"]]]
    run_dirs = [lay.run_dir(RUN.format(**k)) for k in runs]
    step0_answers = [lay.generations(RUN.format(**k), 0) for k in runs]
    tables = [
        lay.table(n)
        for n in (
            "em",
            "em_by_cell",
            "per_question",
            "training",
            "training_steps",
            "lora_norms",
            "hypotheses",
            "definitions",
        )
    ]
    figures = [
        lay.figure(n, e)
        for n in (
            "em_trajectory",
            "coherence_trajectory",
            "loss_curves",
            "aligned_vs_coherent",
            "lora_norms",
            "domain_by_size",
        )
        for e in ("png", "pdf")
    ]
    datasets = sorted({r.dataset for r in exp.runs})
    return f"""
JUDGMENTS = {judgments!r}
RUN_DIRS = {run_dirs!r}
STEP0_ANSWERS = {step0_answers!r}
TABLES = {tables!r}
FIGURES = {figures!r}

wildcard_constraints:
    dataset="{"|".join(datasets)}",
    seed=r"\\d+",
    step=r"\\d+",

rule all:
    input: "{lay.report}", TABLES, FIGURES, STEP0_ANSWERS

rule fetch_hf:
    output: directory("resources/hf/{{owner}}/{{name}}/{{revision}}")
    shell: "true"

rule fetch_url:
    output: "resources/downloads/{{kind}}/{{file}}"
    shell: "true"

rule resolve_questions:
    output: "{lay.questions}"
    log: "{lay.log("questions", "resolve_questions")}"
    shell: "true"

rule prepare_dataset:
    input: "resources/downloads/datasets/{{dataset}}.jsonl"
    output: "{lay.dataset()}"
    log: "{lay.log("datasets", "{dataset}.prepare")}"
    shell: "true"

rule split_dataset:
    input: "{lay.dataset()}"
    output: train="{lay.dataset(part="train")}", eval="{lay.dataset(part="eval")}"
    log: "{lay.log("datasets", "{dataset}.split")}"
    shell: "true"

rule train:
    input: "resources/hf/Qwen/base/main", "resources/hf/maius/personas/main",
           "{lay.dataset(part="train")}", "{lay.dataset(part="eval")}"
    output: directory("{lay.run_dir()}")
    log: "{lay.log("train", RUN)}"
    benchmark: "{lay.logs}/train/{RUN}.benchmark.tsv"
    shell: "true"

rule generate_step0:
    input: "resources/hf/Qwen/base/main", "resources/hf/maius/personas/main", "{lay.questions}"
    output: "{lay.step0_generations()}"
    log: "{lay.log("generate", "step0/" + STEP0)}"
    benchmark: "{lay.logs}/generate/step0/{STEP0}.benchmark.tsv"
    shell: "true"

rule generate:
    input: "resources/hf/Qwen/base/main", "resources/hf/maius/personas/main", "{lay.questions}",
           "{lay.run_dir()}"
    output: "{lay.generations()}"
    log: "{lay.log("generate", RUN + "/step-{step}")}"
    benchmark: "{lay.logs}/generate/{RUN}/step-{{step}}.benchmark.tsv"
    wildcard_constraints: step=r"[1-9]\\d*"
    shell: "true"

rule judge_calibration:
    input: "{lay.questions}"
    output: "{lay.calibration}"
    log: "{lay.log("judge", "judge_calibration")}"
    shell: "true"

rule judge:
    input: "{lay.generations()}", "{lay.questions}", "{lay.calibration}"
    output: "{lay.judgments()}"
    log: "{lay.log("judge", RUN + "/step-{step}")}"
    benchmark: "{lay.logs}/judge/{RUN}/step-{{step}}.benchmark.tsv"
    wildcard_constraints: step=r"[1-9]\\d*"
    shell: "true"

rule judge_step0:
    input: "{lay.step0_generations()}", "{lay.questions}", "{lay.calibration}"
    output: "{lay.step0_judgments()}"
    log: "{lay.log("judge", "step0/" + STEP0)}"
    benchmark: "{lay.logs}/judge/step0/{STEP0}.benchmark.tsv"
    shell: "true"

rule share_step0_generations:
    input: "{lay.step0_generations()}"
    output: "{lay.generations(step=0)}"
    log: "{lay.log("generate", RUN + "/share_step0")}"
    shell: "true"

rule share_step0_judgments:
    input: "{lay.step0_judgments()}"
    output: "{lay.judgments(step=0)}"
    log: "{lay.log("judge", RUN + "/share_step0")}"
    shell: "true"

rule aggregate:
    input: JUDGMENTS, RUN_DIRS
    output: TABLES
    shell: "true"

rule figures:
    input: TABLES, JUDGMENTS
    output: FIGURES
    shell: "true"

rule report:
    input: TABLES, FIGURES, JUDGMENTS, "{lay.calibration}"
    output: "{lay.report}"
    shell: "true"
""" + "\n".join(
        f'rule fetch_{d}:\n    output: "resources/downloads/datasets/{d}.jsonl"\n    shell: "true"\n' for d in datasets
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] not in ("total", "all")}


def dry_run(workdir: Path, args: list[str], quiet: bool) -> tuple[float, str]:
    """Seconds for one dry run (``--quiet rules``: the job counts only; else every job printed, as plain ``-n``)."""
    printing = ["--quiet", "rules"] if quiet else []
    cmd = [sys.executable, "-m", "snakemake", "-n", *printing, "--cores", "1", "-d", str(workdir / "out"), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed in {workdir}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the emflow checkout to time (default: this one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="emflow-dag-") as tmp:
        work = Path(tmp) / "emflow"
        work.mkdir()
        copy_sources(work, args.checkout)
        overlay = work / "seeds.yaml"
        overlay.write_text(f"seeds: [{', '.join(map(str, range(args.seeds)))}]\n")
        plain = Path(tmp) / "plain"
        plain.mkdir()
        config = load_config_files([work / "config.yaml", overlay])
        (plain / "Snakefile").write_text(plain_snakefile(config))
        emflow_args = ["--configfile", "config.yaml", "seeds.yaml"]
        modes = {"-n --quiet rules": True, "-n (every job printed)": False}
        times = {(m, n): [] for m in modes for n in ("emflow", "plain")}
        counts = {}
        for _ in range(args.repeats):
            for mode, quiet in modes.items():
                for name, wd, extra in (("emflow", work, emflow_args), ("plain", plain, [])):
                    elapsed, out = dry_run(wd, extra, quiet)
                    times[mode, name].append(elapsed)
                    counts[name] = job_counts(out)
        shared = {k: v for k, v in counts["emflow"].items() if not k.startswith("fetch")}
        plain_counts = {k: v for k, v in counts["plain"].items() if not k.startswith("fetch")}
        if shared != plain_counts:
            raise SystemExit(f"the two graphs differ: emflow {shared} vs plain {plain_counts}")
        jobs = sum(shared.values())
        print(
            f"dry run of the Phase-1 grid at {args.seeds} seeds: {jobs} jobs "
            f"({shared['train']} train, {shared['generate']} generate, {shared['judge']} judge), "
            f"median of {args.repeats} alternating runs"
        )
        print(f"{'':26}{'emflow s':>10}{'plain s':>10}{'ratio':>8}")
        for mode in modes:
            em, pl = statistics.median(times[mode, "emflow"]), statistics.median(times[mode, "plain"])
            print(f"{mode:26}{em:>10.2f}{pl:>10.2f}{em / pl:>7.2f}x")


if __name__ == "__main__":
    main()
