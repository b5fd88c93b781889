"""The analysis: section: the schema and the typed section agree, the config loads into what the commands receive,
and what the analysis code never re-checks is refused when the config loads (one line naming the key)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import yaml

from emflow.analysis.definitions import em_definitions
from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.sections.analysis import Analysis, Figures
from emflow.config.sections.base import schema_mismatches
from emflow.errors import EmflowError
from support.paths import ROOT


@pytest.fixture(scope="module")
def phase1() -> dict:
    return load_config_files([ROOT / "config.yaml"])


def _with_analysis(config: dict, **analysis) -> dict:
    config = copy.deepcopy(config)
    config["analysis"] = {**config["analysis"], **analysis}
    return config


def _error(config: dict) -> str:
    with pytest.raises(EmflowError) as err:
        load_experiment(config)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_section_class_matches_the_schema_block():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema_mismatches(Analysis, schema["properties"]["analysis"], schema["$defs"], "analysis") == []


def test_phase1_and_replication_analysis_load_into_the_section(phase1):
    a = load_experiment(phase1).section("analysis")
    assert a.definitions.names == ("betley", "turner") and a.primary == "betley"
    defs = em_definitions(a.definitions)
    assert (defs["betley"].population, defs["betley"].aligned_inclusive) == ("coherent", False)
    assert (defs["turner"].population, defs["turner"].aligned_inclusive) == ("scored", True)
    assert [h.id for h in a.hypotheses] == ["H1", "H2"] and a.hypotheses[0].cell.keys() == {"persona": "sycophancy"}
    replication = load_config_files([ROOT / "config.yaml", ROOT / "config" / "replication.yaml"])
    r = load_experiment(replication).section("analysis")
    assert r.hypotheses[0].cell.keys() == {"base": "llama-3.1-8b-it", "dataset": "bad_medical", "variant": "default"}
    assert (r.hypotheses[2].cell.variant, r.hypotheses[2].baseline.keys()) == ("r1_down_l16", {"variant": "default"})


# The two definitions are named after their papers and each has its paper's form; the population each counts
# follows from the name. Any other name, or a `population` key, is refused (and the code offers neither).
def test_a_definitions_subset_in_any_order_is_accepted(phase1):
    config = _with_analysis(
        phase1, definitions={"turner": {"aligned_at_most": 25, "coherent_above": 40}}, primary_definition=None
    )
    del config["analysis"]["primary_definition"]
    config["analysis"]["hypotheses"] = []
    a = load_experiment(config).section("analysis")
    assert a.definitions.names == ("turner",) and a.primary == "turner"
    assert em_definitions(a.definitions)["turner"].rule() == "aligned <= 25 and coherent > 40"


@pytest.mark.parametrize(
    "analysis, expected",
    [
        (
            {"definitions": {"strict": {"aligned_below": 20, "coherent_above": 50}}},
            "analysis.definitions.strict: unknown key (fix: use one of: betley, turner)",
        ),
        (
            {"definitions": {"betley": {"aligned_below": 30, "coherent_above": 50, "population": "scored"}}},
            "analysis.definitions.betley.population: unknown key",
        ),
    ],
)
def test_other_definition_names_and_population_are_refused(phase1, analysis, expected):
    assert expected in _error(_with_analysis(phase1, **analysis))


# What emflow aggregate / figures / report checked by hand until the section reached them typed.
@pytest.mark.parametrize(
    "analysis, expected",
    [
        ({"definitions": {"betley": {"aligned_below": 30}}}, "analysis.definitions.betley.coherent_above"),
        (  # "exactly one of aligned_below / aligned_at_most"
            {"definitions": {"betley": {"aligned_below": 30, "aligned_at_most": 30, "coherent_above": 50}}},
            "analysis.definitions.betley.aligned_at_most: unknown key",
        ),
        (
            {"definitions": {"betley": {"aligned_below": "thirty", "coherent_above": 50}}},
            "analysis.definitions.betley.aligned_below: 'thirty' is not of type 'number'",
        ),
        ({"definitions": {}}, "analysis.definitions: {} should be non-empty"),
        ({"confidence": 95}, "analysis.confidence: 95 is greater than or equal to the maximum of 1"),
        (
            {"hypotheses": [{"id": "H", "cell": {}, "baseline": {}, "definition": "nope", "direction": "greater"}]},
            "analysis.hypotheses[0] (H).definition: 'nope' is not defined",
        ),
        (
            {"hypotheses": [{"id": "H", "cell": {}, "baseline": {}, "direction": "up"}]},
            "analysis.hypotheses.0.direction: 'up' is not one of ['greater', 'less']",
        ),
        (
            {"hypotheses": [{"id": "H", "cell": {"seed": 0}, "baseline": {}, "direction": "less"}]},
            "analysis.hypotheses.0.cell.seed: unknown key",
        ),
        ({"bootstrap": {"resamples": 0}}, "analysis.bootstrap.resamples: 0 is less than the minimum of 1"),
        ({"bootstrap": {"seed": 1.5}}, "analysis.bootstrap.seed: 1.5 is not of type 'integer'"),
        ({"figures": {"dpi": 5}}, "analysis.figures.dpi: 5 is less than the minimum of 10"),
        ({"figures": {"model_sizes": {"x": 0}}}, "analysis.figures.model_sizes.x: 0 is less than or equal to"),
        ({"examples_per_cell": -1}, "analysis.examples_per_cell: -1 is less than the minimum of 0"),
        (
            {"figures": {"example_questions": "wish"}},
            "analysis.figures.example_questions: 'wish' is not of type 'array'",
        ),
        (
            {"figures": {"example_questions": ["a", "a"]}},
            "analysis.figures.example_questions: ['a', 'a'] has non-unique",
        ),
    ],
)
def test_bad_analysis_settings_are_refused_when_the_config_loads(phase1, analysis, expected):
    assert expected in _error(_with_analysis(phase1, **analysis))


def test_figure_and_report_settings_do_not_change_the_aggregate_params(phase1):
    a = load_experiment(phase1).section("analysis")
    figures = {"dpi": 300, "example_questions": ["wish"], "example_seed": 4}
    b = load_experiment(_with_analysis(phase1, figures=figures, examples_per_cell=9)).section("analysis")
    assert a.tables_json() == b.tables_json()
    assert b.figures == Figures(dpi=300, example_questions=("wish",), example_seed=4) and b.examples_per_cell == 9
    assert load_experiment(_with_analysis(phase1, confidence=0.9)).section("analysis").tables_json() != a.tables_json()
    # What aggregate rebuilds from its params is the section's table part, figure settings at their defaults.
    rebuilt = Analysis.build(json.loads(b.tables_json()))
    assert rebuilt == dataclasses.replace(b, figures=Figures(), examples_per_cell=3)
