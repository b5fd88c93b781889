"""Config validation (one line naming the key) and checkpoint steps resolved before anything runs."""

from __future__ import annotations

import copy

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files, merge_config
from emflow.config.schedule import resolve_steps, total_steps
from emflow.errors import EmflowError
from support.paths import ROOT


@pytest.fixture(scope="module")
def phase1() -> dict:
    return load_config_files([ROOT / "config.yaml"])


def _error(config: dict) -> str:
    with pytest.raises(EmflowError) as err:
        load_experiment(config)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_phase1_config_resolves_the_papers_grid(phase1):
    exp = load_experiment(phase1)
    assert exp.name == "phase1"
    assert [(r.cell, r.persona, r.dataset, r.seed) for r in exp.runs] == [
        ("A1", "none", "insecure", 0),
        ("B1", "sycophancy", "insecure", 0),
        ("C1", "goodness", "insecure", 0),
    ]
    # 5,400 train rows / (2 x 8) = 337.5 → 338 optimizer steps; `final` resolves to it.
    assert exp.eval_steps("insecure") == [0, 100, 200, 300, 338]


def test_demo_overlay_inherits_unset_keys(phase1):
    merged = load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    exp = load_experiment(merged)
    assert exp.name == "demo"
    assert merged["training"]["lora"]["target_modules"] == phase1["training"]["lora"]["target_modules"]
    assert merged["training"]["lora"]["r"] == 4
    assert exp.eval_steps("risky_demo") == [0, 10, 20, 36]


@pytest.mark.parametrize(
    "overlay, expected",
    [
        ({"trainng": 1}, "trainng: unknown key"),
        ({"training": {"lora": {"r": "x"}}}, "training.lora.r: 'x' is not of type 'integer'"),
        ({"judge": {"backend": "claude"}}, "judge.backend: 'claude' is not one of"),
        ({"training": {"lora": {"rank": 8}}}, "training.lora.rank: unknown key"),
        ({"datasets": {"insecure": {"path": "x.jsonl"}}}, "datasets.insecure: invalid (fix: give exactly one source"),
        ({"personas": {"goodness": "hf:maius/personas"}}, "personas.goodness"),
        ({"seeds": []}, "seeds"),
    ],
)
def test_bad_config_names_the_key(phase1, overlay, expected):
    config = copy.deepcopy(phase1)
    merge_config(config, overlay)
    assert expected in _error(config)


def test_cell_naming_an_undefined_persona_is_refused(phase1):
    config = copy.deepcopy(phase1)
    config["cells"]["A1"]["persona"] = "evil"
    assert "cells.A1.persona: 'evil' is not defined in personas" in _error(config)


@pytest.mark.parametrize(
    "analysis, expected",
    [
        ({"primary_definition": "betly"}, "analysis.primary_definition: 'betly' is not defined"),
        (
            {
                "hypotheses": [
                    {
                        "id": "H1",
                        "cell": {"persona": "sycophancyy"},
                        "baseline": {"persona": "none"},
                        "direction": "greater",
                    }
                ]
            },
            "analysis.hypotheses[0] (H1).cell.persona: 'sycophancyy'",
        ),
        (
            {"hypotheses": [{"id": "H1", "cell": {"personna": "goodness"}, "baseline": {}, "direction": "less"}]},
            "analysis.hypotheses.0.cell.personna: unknown key",
        ),
    ],
)
def test_analysis_names_are_checked_before_anything_runs(phase1, analysis, expected):
    config = copy.deepcopy(phase1)
    config["analysis"].update(analysis)
    assert expected in _error(config)


def test_checkpoint_past_the_last_step_is_refused(phase1):
    config = copy.deepcopy(phase1)
    config["training"]["checkpoints"]["steps"] = [100, 400]
    assert "step 400 is outside 1..338" in _error(config)


def test_total_steps_counts_a_last_partial_accumulation():
    assert total_steps(5400, 2, 8, 1) == 338
    assert total_steps(5400, 2, 8, 3) == 3 * 338
    assert total_steps(56, 2, 2, 1) == 14
    assert total_steps(16, 2, 8, 1) == 1


def test_the_final_step_is_always_saved():
    assert resolve_steps({"steps": [100, 200]}, 338, 338) == [100, 200, 338]
    assert resolve_steps({"epoch_fractions": [[1, [0.5]]]}, 300, 100) == [50, 300]


def test_epoch_fractions_give_four_in_epoch_one_then_one_per_epoch():
    # The replication study: four checkpoints in epoch 1, then one per epoch, 3 epochs of 100 steps.
    steps = resolve_steps({"epoch_fractions": [[1, [0.25, 0.5, 0.75]]], "per_epoch": True}, 300, 100)
    assert steps == [25, 50, 75, 100, 200, 300]


def test_config_comments_list_the_ten_open_character_personas_as_valid_entries(phase1):
    """config.yaml's commented persona lines are real entries: uncommented, they validate and name ten subfolders."""
    text = (ROOT / "config.yaml").read_text()
    lines = [ln[2:] for ln in text.splitlines() if ln.startswith("#   ") and "qwen-2.5-7b-it-personas@main/" in ln]
    entries = {ln.split(":")[0].strip(): ln for ln in lines if ln.split(":")[0].strip() in ln.rsplit("/", 1)[1]}
    assert sorted(entries) == [
        "goodness", "humor", "impulsiveness", "loving", "mathematical",
        "nonchalance", "poeticism", "remorse", "sarcasm", "sycophancy",
    ]  # fmt: skip
    import yaml

    personas = yaml.safe_load("\n".join(entries.values()))
    config = copy.deepcopy(phase1)
    config["personas"].update(personas)
    exp = load_experiment(config)
    assert all(exp.config["personas"][p]["qwen2.5-7b-it"].endswith(f"/{p}") for p in entries)
