"""The replication study's config (Llama-3.2-1B/3B, Llama-3.1-8B x bad medical / risky financial) and the real
public sources config.yaml points at."""

from __future__ import annotations

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.io import sha256_file
from support.paths import ROOT
from support.snakemake_runner import job_counts, snakemake

REPLICATION = ["config.yaml", "config/replication.yaml"]

# Checkpoint steps worked out by hand (batch 2 x accumulation 8 = 16 rows a step, 3 epochs):
# bad_medical: 7,049 rows - 705 eval = 6,344 train -> 3,172 micro-batches -> ceil(3,172 / 8) = 397 steps an epoch,
#   1,191 in all; epoch 1 at 1/4, 1/2, 3/4, 1: 99.25 -> 99, 198.5 -> 198 (round half to even), 297.75 -> 298,
#   397; then every epoch end: 397, 794, 1,191.
# risky_financial: 6,000 - 600 = 5,400 train -> 2,700 micro-batches -> ceil(337.5) = 338 an epoch, 1,014 in all;
#   84.5 -> 84, 169, 253.5 -> 254, 338; then 338, 676, 1,014.
STEPS = {
    "bad_medical": [0, 99, 198, 298, 397, 794, 1191],
    "risky_financial": [0, 84, 169, 254, 338, 676, 1014],
}
MODELS = ["llama-3.2-1b-it", "llama-3.2-3b-it", "llama-3.1-8b-it"]


def test_replication_grid_is_three_llamas_by_two_datasets_with_hand_computed_steps():
    exp = load_experiment(load_config_files([ROOT / p for p in REPLICATION]), source="replication")
    assert sorted((r.base, r.persona, r.dataset, r.variant) for r in exp.runs) == sorted(
        [(m, "none", d, "default") for m in MODELS for d in STEPS]
        + [("llama-3.1-8b-it", "none", d, "r1_down_l16") for d in STEPS]
    )
    for dataset, steps in STEPS.items():
        assert exp.eval_steps(dataset) == exp.eval_steps(dataset, "r1_down_l16") == steps  # same batch and epochs
    t = exp.config["training"]
    assert (t["lora"]["r"], t["lora"]["alpha"], t["epochs"]) == (16, 32, 3)
    r1 = exp.training("r1_down_l16")  # the minimal organism: rank 1 on one layer's down_proj, the rest as r16
    assert (r1.lora.r, r1.lora.target_modules, r1.lora.layers_to_transform) == (1, ("down_proj",), (16,))
    assert (r1.epochs, r1.learning_rate, r1.load_in_4bit) == (3, exp.training().learning_rate, True)
    assert exp.config["judge"]["model"].startswith("gpt-4o-mini")
    for name in MODELS:  # pinned to a commit, not a branch
        assert len(exp.config["models"][name].rsplit("@", 1)[1]) == 40


def test_replication_dry_run_lists_eight_trainings_and_every_checkpoint(checkout):
    counts = job_counts(snakemake(checkout, "-n", "--quiet", "rules", "--configfile", *REPLICATION))
    assert counts["train"] == 8  # 3 Llamas x 2 datasets with r16, and the 8B x 2 datasets with the rank-1 variant
    # every checkpoint of every run; step 0 once per base (no persona, one seed), copied into that base's runs
    checkpoints = len(STEPS["bad_medical"]) + len(STEPS["risky_financial"]) - 2
    assert counts["generate"] == counts["judge"] == 4 * checkpoints
    assert counts["generate_step0"] == counts["judge_step0"] == len(MODELS)
    assert counts["share_step0_generations"] == counts["share_step0_judgments"] == 8
    assert counts["fetch_hf"] == 3  # three base models, no persona
    assert counts["fetch_url"] == 2  # the shared archive once, and the question file
    assert counts["prepare_dataset"] == counts["split_dataset"] == 2
    out = snakemake(checkout, "-n", "-p", "--configfile", *REPLICATION)
    for dataset, steps in STEPS.items():
        for step in steps:
            for variant in ("default", "r1_down_l16"):
                assert f"generations/llama-3.1-8b-it/none/{dataset}/{variant}/seed0/step-{step}.jsonl" in out
    # the dry run lists the runs per variant, and the variant's training reaches its train jobs only
    assert "r1_down_l16 (" in out and ": 2 runs, cells C3, C4" in out and ": 6 runs, cells A1, B1, C1, A2" in out
    trains = [line for line in out.splitlines() if "emflow train " in line]
    assert len(trains) == 8 and sum('"layers_to_transform":[16]' in line for line in trains) == 2


def test_model_organisms_datasets_share_one_pinned_archive_and_documented_password():
    datasets = load_config_files([ROOT / "config.yaml"])["datasets"]
    mo = {name: datasets[name] for name in ("bad_medical", "risky_financial", "extreme_sports")}
    assert {s["member"] for s in mo.values()} == {
        "bad_medical_advice.jsonl",
        "risky_financial_advice.jsonl",
        "extreme_sports.jsonl",
    }
    assert len({s["archive"] for s in mo.values()}) == 1 and len({s["archive_sha256"] for s in mo.values()}) == 1
    archive = mo["bad_medical"]["archive"]
    assert "clarifying-EM/model-organisms-for-EM" in archive
    assert archive.endswith("/em_organism_dir/data/training_datasets.zip.enc")
    assert all(s["password_default"] == "model-organisms-em-datasets" for s in mo.values())
    assert (mo["bad_medical"]["rows"], mo["risky_financial"]["rows"], mo["extreme_sports"]["rows"]) == (
        7049,
        6000,
        6000,
    )


def test_pinned_question_hash_matches_the_anchors_copy(anchors):
    questions = load_config_files([ROOT / "config.yaml"])["questions"]
    assert questions["file"].endswith("/evaluation/first_plot_questions.yaml")
    assert sha256_file(anchors / "betley_first_plot_questions.yaml") == questions["sha256"]


def test_anchors_risky_financial_matches_the_declared_row_count(anchors):
    declared = load_config_files([ROOT / "config.yaml"])["datasets"]["risky_financial"]["rows"]
    lines = [ln for ln in (anchors / "risky_financial_advice.jsonl").read_text().splitlines() if ln.strip()]
    assert len(lines) == declared


@pytest.mark.parametrize("overlay", [[], ["config/demo.yaml"]])
def test_other_configs_still_validate(overlay):
    load_experiment(load_config_files([ROOT / "config.yaml", *(ROOT / p for p in overlay)]))


def test_smoke_dry_run_is_one_small_model_on_the_three_model_organisms_datasets(checkout):
    """config/smoke.yaml: a real small model (pinned), no persona, 200 + 40 rows per dataset, two checkpoints."""
    smoke = ["config.yaml", "config/smoke.yaml"]
    exp = load_experiment(load_config_files([ROOT / p for p in smoke]), source="smoke")
    assert {(r.base, r.persona, r.dataset) for r in exp.runs} == {
        ("small-instruct", "none", d) for d in ("bad_medical", "risky_financial", "extreme_sports")
    }
    assert exp.config["models"]["small-instruct"].startswith("hf:Qwen/Qwen2.5-0.5B-Instruct@")
    assert all(exp.eval_steps(d) == [0, 12, 25] for d in ("bad_medical", "risky_financial", "extreme_sports"))
    counts = job_counts(snakemake(checkout, "-n", "--quiet", "rules", "--configfile", *smoke))
    assert counts["train"] == 3 and counts["generate"] == counts["judge"] == 3 * 2
    # one step 0 for the three datasets' runs (same base, no persona, one seed), and a copy in each run
    assert counts["generate_step0"] == counts["judge_step0"] == 1
    assert counts["share_step0_generations"] == counts["share_step0_judgments"] == 3
    assert counts["fetch_hf"] == 1 and counts["fetch_url"] == 2  # the model; the shared archive and questions
