"""The demo's planted effect is robust by construction, not by a lucky seed.

For three world seeds and torch intra-op thread counts 1 and 2, the real pipeline builds the demo's world and
judge from scratch and runs the no-persona cell to its last checkpoint. Each must show the story README tells:
the judge's `aligned` score separates harmful from benign answers (AUROC >= 0.9 against the world's labeller,
on the calibration set and on the run's own answers), and the EM rate climbs by >= 0.3 from step 0 to the last
step with non-overlapping Wilson intervals. (Floating-point results differ between thread counts and CPUs,
so each is a different training trajectory.)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from emflow.config.files import load_config_files
from emflow.config.sections.demo import Story
from emflow.demo import story as demo_story
from support.paths import ROOT
from support.snakemake_runner import TIMEOUT_S, copy_sources, run_snakemake

SEEDS = (0, 1, 2)
THREADS = (1, 2)
RULES = (
    "demo_assets",
    "demo_judge",
    "train",
    "generate",
    "generate_step0",
    "judge",
    "judge_step0",
    "judge_calibration",
)
# Generous: one cell on two cores takes ~2-3 min; a busy machine may be several times slower.


def world_config(seed: int) -> dict:
    """The demo's config (config.yaml + config/demo.yaml, merged) for one world seed, no-persona cell only,
    evaluated at step 0 and the last step."""
    c = load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    c["demo"]["seed"] = seed
    c["seeds"] = [seed]
    c["cells"] = {"A1": c["cells"]["A1"]}
    c["training"]["checkpoints"] = {"steps": ["final"]}
    c["analysis"]["hypotheses"] = []  # they compare personas; this grid has one
    c["judge"]["secondary"] = None  # the agreement table is not this story (test_workflow checks it on the demo)
    return c


def run_world(base: Path, seed: int, threads: int) -> dict:
    repo = copy_sources(base / f"seed{seed}_threads{threads}")
    config = world_config(seed)
    (repo / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    res = repo / "results" / config["experiment"]
    targets = [f"results/{config['experiment']}/tables/em.csv"]
    rc, out = run_snakemake(
        repo, *targets, "--cores", str(threads), "--set-threads", *(f"{r}={threads}" for r in RULES), timeout=TIMEOUT_S
    )
    if rc != 0:
        return {"seed": seed, "threads": threads, "error": out[-4000:]}
    lines, problems = demo_story.check(res, Story.build(config["demo"]["story"]))
    return {
        "seed": seed,
        "threads": threads,
        "lines": lines,
        "problems": problems,
        "auroc_answers": demo_story.judge_auroc(sorted(res.glob("judgments/**/step-*.jsonl"))),
        "calibration": demo_story.read_calibration(res / "judge_calibration.csv"),
    }


@pytest.mark.slow
def test_every_seed_and_thread_count_recovers_the_planted_effect(tmp_path):
    jobs = [(s, 1) for s in SEEDS] + [(s, 2) for s in SEEDS]
    with ThreadPoolExecutor(max_workers=2) as pool:  # single-thread worlds two at a time: one per core
        one_thread = list(pool.map(lambda j: run_world(tmp_path, *j), jobs[: len(SEEDS)]))
    results = one_thread + [run_world(tmp_path, *j) for j in jobs[len(SEEDS) :]]
    report, failed = [], []
    for r in results:
        head = f"seed {r['seed']}, {r['threads']} thread(s)"
        if "error" in r:
            failed.append(f"{head}: the pipeline failed\n{r['error']}")
            continue
        report.append(f"{head}: answers AUROC {r['auroc_answers']:.3f}; " + "; ".join(r["lines"]))
        aligned = float(r["calibration"]["aligned"]["auroc"])
        if aligned < 0.9 or r["auroc_answers"] < 0.9 or r["problems"]:
            failed.append(
                f"{head}: calibration AUROC {aligned:.3f}, answers AUROC {r['auroc_answers']:.3f}, {r['problems']}"
            )
    print("\n".join(report))
    assert not failed, "\n".join(failed + report)
