"""How generation jobs are cut (generation.group_checkpoints) and where the API judge runs (judge.run_on)."""

from __future__ import annotations

from support.snakemake_runner import job_counts, snakemake

PHASE1_STEPS = 5  # 0, 100, 200, 300 and final


def dry_run(checkout, overlay: str, *args: str) -> str:
    (checkout / "overlay.yaml").write_text(overlay)
    return snakemake(checkout, "-n", "--configfile", "config.yaml", "overlay.yaml", *args)


def test_grouped_checkpoints_make_one_generate_job_per_run_with_every_step_file(checkout):
    out = dry_run(checkout, "generation: {group_checkpoints: true}\n", "-p")
    counts = job_counts(out)
    assert counts["generate"] == 3 and counts["judge"] == 3 * (PHASE1_STEPS - 1)
    assert counts["generate_step0"] == counts["judge_step0"] == 3  # step 0: its own job per base/persona/seed
    assert out.count("emflow generate ") == 3 + 3 and out.count("--steps 100,200,300,338 --out ") == 3
    assert out.count("--run-dir none --steps 0 ") == 3
    assert "group_checkpoints" not in out.split("emflow generate ", 1)[1].split("\n", 1)[0]


def test_datasets_with_different_steps_get_one_grouped_rule_each(checkout):
    overlay = (
        "generation: {group_checkpoints: true}\n"
        "datasets: {other: {path: other.jsonl, rows: 6400, eval_rows: 0}}\n"
        "cells: {D1: {model: qwen2.5-7b-it, persona: none, dataset: other}}\n"
    )
    (checkout / "other.jsonl").write_text("{}\n")
    counts = job_counts(dry_run(checkout, overlay, "--quiet", "rules"))
    assert counts["generate"] == 3 and counts["generate_other"] == 1


def test_api_judge_is_local_on_login_and_submitted_on_compute(checkout):
    (checkout / "Check.smk").write_text('include: "Snakefile"\nprint("LOCALRULES", sorted(workflow._localrules))\n')

    def local_rules(overlay: str) -> str:
        out = dry_run(checkout, overlay, "-s", "Check.smk", "--quiet", "rules")
        return next(line for line in out.splitlines() if line.startswith("LOCALRULES"))

    # The calibration gate calls the same judge, so it runs where the judge runs.
    login = local_rules("judge: {run_on: login}\n")
    assert "'judge'" in login and "'judge_step0'" in login and "'judge_calibration'" in login
    compute = local_rules("judge: {run_on: compute}\n")
    assert "'judge'" not in compute and "'judge_step0'" not in compute and "'judge_calibration'" not in compute
    # copying a run's step-0 files is never a cluster job
    assert "'share_step0_generations'" in compute and "'share_step0_judgments'" in compute
    (checkout / "local_judge").mkdir()  # an hf judge's folder must exist (or be built by a rule) at parse time
    (checkout / "local_judge" / "config.json").write_text("{}")
    hf = local_rules("judge: {run_on: login, backend: hf, model: local_judge}\n")
    assert "'judge'" not in hf and "'judge_calibration'" not in hf
