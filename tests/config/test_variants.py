"""Recipe variants: named overrides of `training`, validated as strictly as `training`, part of each run's
identity (its folder, its steps, the hypotheses' filters)."""

from __future__ import annotations

import copy

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.errors import EmflowError
from support.paths import ROOT

R1 = {"lora": {"r": 1, "alpha": 2, "target_modules": ["down_proj"], "layers_to_transform": [14]}}


@pytest.fixture(scope="module")
def phase1() -> dict:
    return load_config_files([ROOT / "config.yaml"])


def with_variant(config: dict, variants: dict, hypotheses: bool = False, **cells) -> dict:
    """``config`` with ``variants`` and cells like A1 using them; without its hypotheses, which would pool them."""
    c = copy.deepcopy(config)
    c["variants"] = variants
    if not hypotheses:
        c["analysis"]["hypotheses"] = []
    for name, variant in cells.items():
        c["cells"][name] = {**c["cells"]["A1"], "variant": variant}
    return c


def _error(config: dict) -> str:
    with pytest.raises(EmflowError) as err:
        load_experiment(config)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_variant_merges_over_the_recipe_and_keys_its_runs(phase1):
    exp = load_experiment(with_variant(phase1, {"r1_l14": R1}, A2="r1_l14"))
    assert [(r.cell, r.variant) for r in exp.runs] == [
        ("A1", "default"),
        ("B1", "default"),
        ("C1", "default"),
        ("A2", "r1_l14"),
    ]
    assert exp.runs[-1].key == "qwen2.5-7b-it/none/insecure/r1_l14/seed0"
    assert exp.runs[0].key == "qwen2.5-7b-it/none/insecure/default/seed0"
    t, base = exp.training("r1_l14"), exp.training()
    assert (t.lora.r, t.lora.alpha, t.lora.target_modules, t.lora.layers_to_transform) == (
        1,
        2.0,
        ("down_proj",),
        (14,),
    )
    assert (base.lora.r, base.lora.layers_to_transform) == (32, None)
    # everything the variant does not set is the base recipe's (dicts merge)
    assert (t.learning_rate, t.lora.dropout, t.checkpoints) == (base.learning_rate, base.lora.dropout, base.checkpoints)
    assert [p["variant"] for p in exp.plan()] == ["default", "default", "default", "r1_l14"]
    assert list(exp.runs_by_variant()) == ["default", "r1_l14"]


def test_a_variant_that_changes_the_batch_plans_its_own_steps(phase1):
    fewer = {"gradient_accumulation_steps": 16, "checkpoints": {"steps": [50, "final"]}}  # lists replace
    exp = load_experiment(with_variant(phase1, {"big_batch": fewer}, A2="big_batch"))
    assert exp.eval_steps("insecure") == [0, 100, 200, 300, 338]
    # 5,400 rows / (2 x 16) = 168.75 -> 169 steps
    assert exp.eval_steps("insecure", "big_batch") == [0, 50, 169]
    # the base recipe's fixed step 300 lies beyond a variant's last step: said at parse time, naming the variant
    msg = _error(with_variant(phase1, {"big_batch": {"gradient_accumulation_steps": 16}}, A2="big_batch"))
    assert "config: variants.big_batch.checkpoints.steps: step 200 is outside 1..169 (the run's last step)" in msg
    assert msg.endswith("(the variant inherits training.checkpoints; override it there)")


@pytest.mark.parametrize(
    ("variants", "cells", "expected"),
    [
        ({"r1": {"lora": {"rank": 1}}}, {}, "variants.r1.lora.rank: unknown key"),
        ({"r1": {"learning_rate": -1}}, {}, "variants.r1.learning_rate"),
        ({"r1": {"lora": {"layers_to_transform": []}}}, {}, "variants.r1.lora.layers_to_transform"),
        ({"default": {"epochs": 2}}, {}, "variants.default: `default` is the training section's own name"),
        ({"r1": R1}, {"A2": "r2"}, "cells.A2.variant: 'r2' is not defined in variants (fix: use one of: default, r1)"),
    ],
)
def test_bad_variants_fail_with_one_line_naming_the_key(phase1, variants, cells, expected):
    assert expected in _error(with_variant(phase1, variants, **cells))


def test_hypotheses_filter_by_variant_and_unknown_variants_are_refused(phase1):
    c = with_variant(phase1, {"r1": R1}, A2="r1")
    c["analysis"]["hypotheses"] = [
        {"id": "V1", "cell": {"variant": "r1"}, "baseline": {"variant": "default"}, "direction": "greater"}
    ]
    h = load_experiment(c).section("analysis").hypotheses[0]
    assert (h.cell.variant, h.baseline.variant) == ("r1", "default")
    c["analysis"]["hypotheses"][0]["cell"]["variant"] = "r9"
    assert "analysis.hypotheses[0] (V1).cell.variant: 'r9' is not in variants" in _error(c)


def test_a_hypothesis_side_pooling_several_variants_must_name_one(phase1):
    c = with_variant(phase1, {"r1": R1}, hypotheses=True, A2="r1")  # A2: no persona, like A1, with rank 1
    # config.yaml's H1/H2 compare personas with {persona: none}, which now matches A1 (default) and A2 (r1)
    assert "analysis.hypotheses[0] (H1).baseline: pools the runs of variants default, r1" in _error(c)
    for h in c["analysis"]["hypotheses"]:
        h["cell"]["variant"] = "default"  # the baseline inherits it
    load_experiment(c)
