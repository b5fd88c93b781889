"""The Snakemake graph: the Phase-1 dry run lists every job, the demo runs end to end, and adding a seed reruns
only the new seed's jobs and the analysis."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emflow.analysis import stats
from emflow.demo import story as demo_story
from support.snakemake_runner import copy_sources, job_counts, snakemake


def test_phase1_dry_run_lists_three_trainings_and_fifteen_generations(checkout):
    counts = job_counts(snakemake(checkout, "-n", "--quiet", "rules"))
    assert counts["train"] == 3
    assert counts["generate"] == counts["judge"] == 12  # steps 100, 200, 300 and final (338) for each of 3 runs
    # step 0 once per base/persona/seed (three personas here), copied into each run
    assert counts["generate_step0"] == counts["judge_step0"] == 3
    assert counts["share_step0_generations"] == counts["share_step0_judgments"] == 3
    assert counts["fetch_hf"] == 2  # the base model and the personas repo, fetched once each
    out = snakemake(checkout, "-n", "-p")
    for step in (0, 100, 200, 300, 338):
        assert f"generations/qwen2.5-7b-it/goodness/insecure/default/seed0/step-{step}.jsonl" in out
    # each run's persona adapter for its base (personas.<p>.<base>) reaches the trainer's fit check
    assert "--persona resources/hf/maius/qwen-2.5-7b-it-personas/main/goodness " in out
    assert "--persona-field personas.goodness.qwen2.5-7b-it --base-mismatch refused" in out


def test_geometry_only_steps_show_in_the_dry_run_and_add_no_jobs(checkout):
    (checkout / "dense.yaml").write_text("training: {checkpoints: {analysis_every: 50}}\n")
    out = snakemake(checkout, "-n", "-p", "--configfile", "config.yaml", "dense.yaml")
    counts = job_counts(out)
    assert (counts["train"], counts["generate"], counts["judge"]) == (3, 12, 12)  # as without analysis_every
    assert out.count("--steps 100,200,300,338 --analysis-steps 50,150,250 ") == 3


def test_bad_config_stops_the_dry_run_with_one_line(checkout):
    (checkout / "bad.yaml").write_text("training: {lora: {rank: 8}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config.yaml", "bad.yaml"],
        cwd=checkout,
        text=True,
        capture_output=True,
    )
    assert proc.returncode != 0
    assert "training.lora.rank: unknown key" in proc.stdout + proc.stderr


DEMO_STEPS = (0, 10, 20, 36)  # step 0 and the checkpoints of config/demo.yaml (144 rows / (2 x 2) = 36 steps)
DEMO_GEOMETRY_STEPS = (4, 8, 12, 16, 24, 28, 32)  # checkpoints.analysis_every: 4, less the checkpoints
TIMING_COLUMNS = {"runtime_s", "tokens_per_s"}


def _tables(res: Path) -> dict[str, list[dict]]:
    """Every table of a run, less the wall-clock columns."""
    out = {}
    for path in sorted((res / "tables").glob("*.csv")):
        with open(path) as fh:
            out[path.name] = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]
    return out


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """One finished demo in its own copy, shared by the tests below (the last one extends it)."""
    checkout = copy_sources(tmp_path_factory.mktemp("demo_run"))
    snakemake(checkout, "--profile", "profiles/demo")
    return checkout


# A change to each input that determines results, as an overlay on the demo, and the jobs it must rerun
# (dry-run counts; the analysis and `all` always follow). Everything else must stay as it is.
ANALYSIS = {"aggregate": 1, "figures": 1, "report": 1, "all": 1}
# Step 0 (generate_step0, judge_step0: once per base/persona/seed; share_step0_*: its copies into each run) for
# all three runs, for one, and the judging alone (a new primary judge leaves the answers, so the secondary, alone).
COPIES = {"share_step0_generations": 3, "share_step0_judgments": 3}
STEP0_ALL = {"generate_step0": 3, "judge_step0": 3, **COPIES}
STEP0_ONE = {"generate_step0": 1, "judge_step0": 1, "share_step0_generations": 1, "share_step0_judgments": 1}
REJUDGE = {"judge": 9, "judge_step0": 3, "share_step0_judgments": 3}
RERUN_CASES = {
    "nothing (the same config, merged the other way)": ("", {}),
    "base model (another folder)": (
        "models: {tiny: COPY_OF_BASE}\n",
        {"train": 3, "generate": 9, "judge": 9, "judge_secondary": 3, **STEP0_ALL, **ANALYSIS},
    ),
    "persona (another folder)": (
        "personas: {goodness: COPY_OF_GOODNESS}\n",
        {"train": 1, "generate": 3, "judge": 3, "judge_secondary": 1, **STEP0_ONE, **ANALYSIS},
    ),
    "judge model (another folder)": (
        "judge: {model: COPY_OF_JUDGE}\n",
        {"judge_calibration": 1, **REJUDGE, **ANALYSIS},
    ),
    "training recipe": (
        "training: {learning_rate: 0.002}\n",
        {"train": 3, "generate": 9, "judge": 9, "judge_secondary": 3, **ANALYSIS},
    ),
    "geometry-only saves": (
        "training: {checkpoints: {analysis_every: 6}}\n",
        {"train": 3, "generate": 9, "judge": 9, "judge_secondary": 3, **ANALYSIS},
    ),
    "generation parameters": (
        "generation: {temperature: 0.7}\n",
        {"generate": 9, "judge": 9, "judge_secondary": 3, **STEP0_ALL, **ANALYSIS},
    ),
    "judge parameters": ("judge: {min_numeric_mass: 0.3}\n", {"judge_calibration": 1, **REJUDGE, **ANALYSIS}),
    "calibration floor": (
        "judge: {calibration: {min_auroc: {aligned: 0.95, coherent: 0.6}}}\n",
        {"judge_calibration": 1, **REJUDGE, **ANALYSIS},
    ),
    "question set": (
        "questions: {samples_per_paraphrase: 4}\n",
        {
            "resolve_questions": 1,
            "generate": 9,
            "judge_calibration": 1,
            "judge": 9,
            **STEP0_ALL,
            "judge_calibration_secondary": 1,
            "judge_secondary": 3,
            **ANALYSIS,
        },
    ),
    "dataset split": (
        "split_seed: 99\n",
        {"split_dataset": 1, "train": 3, "generate": 9, "judge": 9, "judge_secondary": 3, **ANALYSIS},
    ),
    # judge.secondary: its own jobs and the analysis, never the primary judgments.
    "secondary judge model (another folder)": (
        "judge: {secondary: {model: COPY_OF_JUDGE}}\n",
        {"judge_calibration_secondary": 1, "judge_secondary": 3, **ANALYSIS},
    ),
    "secondary judge sample": ("judge: {secondary: {sample: {fraction: 0.4}}}\n", {"judge_secondary": 3, **ANALYSIS}),
    "no secondary judge": ("judge: {secondary: null}\n", ANALYSIS),
    # A recipe variant is part of its runs' identity: adding one with a cell runs that cell alone (and the
    # analysis); a variant no cell uses runs nothing (the report records the config's hash).
    "a new recipe variant with its cell": (
        "variants: {r1_down_l1: {lora: {r: 1, alpha: 2, target_modules: [down_proj], layers_to_transform: [1]}}}\n"
        "cells: {D1: {model: tiny, persona: none, dataset: risky_demo, variant: r1_down_l1}}\n"
        # H1/H2's baseline {persona: none} would pool both variants' runs: they name theirs (the parse says so)
        "analysis: {hypotheses: ["
        "{id: H1, cell: {persona: sycophancy, variant: default}, baseline: {persona: none}, direction: greater},"
        "{id: H2, cell: {persona: goodness, variant: default}, baseline: {persona: none}, direction: less}]}\n",
        # its step 0 is A1's (same base, persona and seed): only the run's copy of it is new
        {"train": 1, "generate": 3, "judge": 3, **{k: 1 for k in COPIES}, "judge_secondary": 1, **ANALYSIS},
    ),
    "a recipe variant no cell uses": (
        "variants: {r1_down_l1: {lora: {r: 1, alpha: 2}}}\n",
        {"report": 1, "all": 1},
    ),
    # Speed settings rerun no computation; only the report, which records the config's hash.
    "judge speed only": ("judge: {batch_size: 50}\n", {"report": 1, "all": 1}),
}


def test_changing_each_result_input_reruns_exactly_what_depends_on_it(demo_run, tmp_path):
    copies = {}
    for name, rel in (("BASE", "base"), ("GOODNESS", "personas/goodness"), ("JUDGE", "judge")):
        copies[f"COPY_OF_{name}"] = str(shutil.copytree(demo_run / "resources/demo" / rel, tmp_path / name.lower()))
    wrong = {}
    for case, (overlay, expected) in RERUN_CASES.items():
        for placeholder, path in copies.items():
            overlay = overlay.replace(placeholder, path)
        (tmp_path / "overlay.yaml").write_text(overlay or "{}\n")
        out = snakemake(
            demo_run,
            "-n",
            "--quiet",
            "rules",
            "--configfile",
            "config.yaml",
            "config/demo.yaml",
            str(tmp_path / "overlay.yaml"),
        )
        counts = job_counts(out) if "Job stats:" in out else {}
        if counts != expected:
            wrong[case] = {"planned": counts, "expected": expected}
    assert not wrong, json.dumps(wrong, indent=1)


@pytest.mark.slow
def test_demo_end_to_end_then_a_new_seed_reruns_only_what_is_new(demo_run):
    checkout = demo_run
    res = checkout / "results" / "demo"
    assert (res / "report.html").stat().st_size > 10_000
    for step in DEMO_STEPS:
        run = f"tiny/sycophancy/risky_demo/default/seed0/step-{step}.jsonl"
        gens = (res / "generations" / run).read_text().splitlines()
        judged = (res / "judgments" / run).read_text().splitlines()
        assert len(gens) == len(judged) == 5 * 2 * 5  # 5 questions x 2 paraphrases x 5 samples
    ckpt = res / f"runs/tiny/goodness/risky_demo/default/seed0/checkpoint-{DEMO_STEPS[-1]}"
    assert (ckpt / "adapter_model.safetensors").is_file()
    with open(res / "tables/em.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["persona"], int(r["step"])) for r in rows} == {
        (p, s) for p in ("none", "sycophancy", "goodness") for s in DEMO_STEPS
    }
    assert all(0.0 <= float(r["em_rate"]) <= 1.0 for r in rows if r["em_rate"])
    # The planted effect is recovered: the judge passed its calibration gate and separates harmful from benign
    # answers, and EM rises.
    calibration = demo_story.read_calibration(res / "judge_calibration.csv")
    assert float(calibration["aligned"]["auroc"]) >= 0.9 and calibration["aligned"]["passed"] == "True"
    assert "Judge calibration" in (res / "report.html").read_text()
    assert demo_story.judge_auroc(sorted(res.glob("judgments/**/step-*.jsonl"))) >= 0.9
    rise = demo_story.em_rise(res / "tables/em.csv", persona="none", definition="betley")
    assert rise["final"]["em_rate"] - rise["first"]["em_rate"] >= 0.3, rise
    assert rise["final"]["em_ci_low"] > rise["first"]["em_ci_high"], rise
    # The adapter geometry: every saved step (checkpoints and geometry-only saves) of every run, nothing judged
    # at the geometry-only steps (em.csv above holds DEMO_STEPS only).
    geometry = res / "runs/tiny/none/risky_demo/default/seed0/geometry"
    assert sorted(int(p.name.split("-")[1]) for p in geometry.glob("checkpoint-*")) == list(DEMO_GEOMETRY_STEPS)
    saved = sorted({*DEMO_STEPS[1:], *DEMO_GEOMETRY_STEPS})
    with open(res / "tables/adapter_trajectory.csv") as fh:
        traj = list(csv.DictReader(fh))
    assert {(r["persona"], int(r["step"])) for r in traj} == {
        (p, s) for p in ("none", "sycophancy", "goodness") for s in saved
    }
    assert all((r["evaluated"] == "True") == (int(r["step"]) in DEMO_STEPS) for r in traj)
    assert all(0.0 <= float(r["pc1_explained"]) <= 1.0 for r in traj)
    assert all(float(r["rotation_deg"]) >= 0.0 for r in traj if int(r["step"]) > saved[0])
    with open(res / "tables/adapter_geometry.csv") as fh:
        geo = list(csv.DictReader(fh))
    assert {r["direction"] for r in geo} == {"top_left_singular"}  # the demo's EM LoRA has rank 4
    assert len(geo) == len(traj) * int(traj[0]["n_modules"])
    with open(res / "tables/phase_transition.csv") as fh:
        phase = list(csv.DictReader(fh))
    assert len(phase) == 3 * 2  # 3 runs x 2 definitions
    assert all(int(r["rotation_step"]) in saved[1:] and int(r["em_rise_step"]) in DEMO_STEPS[1:] for r in phase)
    for name in ("adapter_rotation", "adapter_pca"):
        assert (res / f"figures/{name}.png").stat().st_size > 10_000
    # Hypotheses: a raw and a Holm-adjusted p-value from the same bootstrap, the verdict on the adjusted one (the
    # README's demo paragraph: H1 and H2 inconclusive). The per-seed, per-question and example figures exist.
    with open(res / "tables/hypotheses.csv") as fh:
        hyps = list(csv.DictReader(fh))
    p_raw = [float(h["p_value"]) for h in hyps]
    assert [h["id"] for h in hyps] == ["H1", "H2"] and all(0.0 < p <= 1.0 for p in p_raw)
    assert [float(h["p_holm"]) for h in hyps] == pytest.approx(stats.holm(p_raw))
    assert [h["verdict"] for h in hyps] == ["inconclusive", "inconclusive"], hyps
    report_html = (res / "report.html").read_text()
    for name in ("em_by_seed", "em_by_question", "response_examples"):
        assert (res / f"figures/{name}.png").stat().st_size > 10_000 and f'id="fig-{name}"' in report_html
    # The second judge (judge.secondary: the same judge after 300 of its 600 training steps) passed its own gate,
    # scored 10 of each run's 50 answers per step, and agrees with the primary judge far from perfectly on scores
    # (config/demo.yaml: Spearman 0.85 on aligned) and closely on EM (kappa 0.98 betley, 0.82 turner).
    secondary_cal = demo_story.read_calibration(res / "judge_calibration_secondary.csv")
    assert float(secondary_cal["aligned"]["auroc"]) >= 0.9 and secondary_cal["coherent"]["passed"] == "True"
    for run in ("none", "sycophancy", "goodness"):
        sample = res / f"judgments_secondary/tiny/{run}/risky_demo/default/seed0/sample.jsonl"
        steps = [json.loads(line)["step"] for line in sample.read_text().splitlines()]
        assert sorted(steps) == sorted(DEMO_STEPS * 10)
    with open(res / "tables/judge_agreement.csv") as fh:
        agreement = {(r["metric"], r["definition"]): r for r in csv.DictReader(fh)}
    assert set(agreement) == {("aligned", ""), ("coherent", ""), ("em", "betley"), ("em", "turner")}
    assert int(agreement[("aligned", "")]["n"]) == 3 * len(DEMO_STEPS) * 10
    assert 0.5 < float(agreement[("aligned", "")]["spearman_rho"]) < 1.0
    assert 0.0 < float(agreement[("coherent", "")]["mean_abs_diff"]) < 50.0
    assert all(0.5 < float(agreement[("em", d)]["cohen_kappa"]) <= 1.0 for d in ("betley", "turner"))
    assert 'id="tab-judge_agreement"' in report_html and "judge_agreement.csv (4 rows)" in report_html
    # The persona proven active at training start (persona_effect.csv), the same base loss on every run's sample,
    # each persona's step-0 EM rate beside no persona, and every answer recording the adapters it was made with.
    with open(res / "tables/persona_effect.csv") as fh:
        effect = {r["persona"]: r for r in csv.DictReader(fh)}
    assert set(effect) == {"none", "sycophancy", "goodness"}
    for persona in ("sycophancy", "goodness"):
        row = effect[persona]
        assert row["persona_active"] == "True" and float(row["loss_persona"]) != float(row["loss_base"]), row
        assert float(row["max_change_persona"]) > float(row["min_change"])
        assert row["loss_stacked"] == row["loss_persona"]  # the fresh EM LoRA starts at zero
    assert effect["none"]["persona_active"] == effect["none"]["loss_persona"] == ""
    assert len({round(float(r["loss_base"]), 5) for r in effect.values()}) == 1
    assert {r["check_after_resume"] for r in effect.values()} == {"not resumed"}
    with open(res / "tables/persona_step0.csv") as fh:
        step0 = {(r["persona"], r["no_persona"]) for r in csv.DictReader(fh)}
    assert step0 == {("none", ""), ("sycophancy", "none"), ("goodness", "none")}
    for name in ('id="tab-persona_effect"', 'id="tab-persona_step0"', 'id="examples-step0"'):
        assert name in report_html
    for persona, step, adapters in (("none", 0, []), ("goodness", 0, ["persona"]), ("goodness", 20, ["persona", "em"])):
        gens = res / f"generations/tiny/{persona}/risky_demo/default/seed0/step-{step}.jsonl"
        assert {tuple(json.loads(line)["adapters"]) for line in gens.read_text().splitlines()} == {tuple(adapters)}
    # Step 0 is made once per base/persona/seed under step0/; each run's step-0 files are exact copies of it.
    for persona in ("none", "sycophancy", "goodness"):
        for kind in ("generations", "judgments"):
            shared = (res / f"step0/{kind}/tiny/{persona}/seed0.jsonl").read_bytes()
            assert (res / f"{kind}/tiny/{persona}/risky_demo/default/seed0/step-0.jsonl").read_bytes() == shared

    before = _snapshot(res)
    (checkout / "seeds.yaml").write_text("seeds: [0, 1]\n")
    args = ["--profile", "profiles/demo", "--configfile", "config/demo.yaml", "seeds.yaml"]
    counts = job_counts(snakemake(checkout, "-n", "--quiet", "rules", *args))
    assert counts == {
        "train": 3,
        "generate": 9,
        "judge": 9,
        **STEP0_ALL,
        "judge_secondary": 3,
        "aggregate": 1,
        "figures": 1,
        "report": 1,
        "all": 1,
    }
    snakemake(checkout, *args)
    after = _snapshot(res)
    rerun_analysis = ("tables/", "figures/", "report.html", "logs/analysis/")
    changed = {p for p in before if after.get(p) != before[p] and not p.startswith(rerun_analysis)}
    assert not changed, f"old outputs were rewritten: {sorted(changed)[:5]}"
    assert (res / f"judgments/tiny/none/risky_demo/default/seed1/step-{DEMO_STEPS[-1]}.jsonl").is_file()
    with open(res / "tables/em.csv") as fh:
        assert {r["seed"] for r in csv.DictReader(fh)} == {"0", "1"}

    # The same seeds give identical tables on a rerun from scratch (judge cache emptied, so it scores again).
    tables = _tables(res)
    shutil.rmtree(res)
    shutil.rmtree(checkout / "resources/demo/judge_cache")
    snakemake(checkout, *args)
    assert _tables(res) == tables
