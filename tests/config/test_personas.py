"""Personas per base model: one persona name across bases, each base its own adapter, resolved and checked when the
config is read."""

from __future__ import annotations

import copy

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files, merge_config
from emflow.config.personas import PersonaAdapter, persona_adapter
from emflow.errors import EmflowError
from support.paths import ROOT

LLAMA = "hf:meta-llama/Llama-3.1-8B-Instruct@0e9e39f249a16976918f6564b8830bc894c89659"
QWEN_SYC = "hf:maius/qwen-2.5-7b-it-personas@main/sycophancy"
LLAMA_SYC = "hf:maius/llama-3.1-8b-it-personas@main/sycophancy"


@pytest.fixture(scope="module")
def phase1() -> dict:
    return load_config_files([ROOT / "config.yaml"])


def with_overlay(config: dict, overlay: dict) -> dict:
    out = copy.deepcopy(config)
    merge_config(out, overlay)
    return out


def _error(config: dict) -> str:
    with pytest.raises(EmflowError) as err:
        load_experiment(config)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# A second base beside Qwen: sycophancy gets Llama's own adapter (merged into config.yaml's per-base mapping),
# goodness stays Qwen-only, and a plain-string persona serves both.
GRID = {
    "models": {"llama-3.1-8b-it": LLAMA},
    "personas": {
        "sycophancy": {"llama-3.1-8b-it": LLAMA_SYC},
        "everywhere": "resources/my-persona",
        "copied": {"llama-3.1-8b-it": {"adapter": QWEN_SYC, "base_mismatch": "intended"}},
    },
    "cells": {
        "D1": {"model": "llama-3.1-8b-it", "persona": "sycophancy", "dataset": "insecure"},
        "E1": {"model": "llama-3.1-8b-it", "persona": "everywhere", "dataset": "insecure"},
        "F1": {"model": "qwen2.5-7b-it", "persona": "everywhere", "dataset": "insecure"},
    },
}


def test_one_persona_name_resolves_to_each_bases_adapter(phase1):
    exp = load_experiment(with_overlay(phase1, GRID))
    pairs = {(r.base, r.persona): persona_adapter(exp.config, r.persona, r.base) for r in exp.runs}
    assert pairs[("qwen2.5-7b-it", "sycophancy")] == PersonaAdapter(QWEN_SYC, "personas.sycophancy.qwen2.5-7b-it")
    assert pairs[("llama-3.1-8b-it", "sycophancy")] == PersonaAdapter(LLAMA_SYC, "personas.sycophancy.llama-3.1-8b-it")
    # a plain string is the same adapter on every base, named by the persona's own key
    assert pairs[("llama-3.1-8b-it", "everywhere")] == pairs[("qwen2.5-7b-it", "everywhere")]
    assert pairs[("qwen2.5-7b-it", "everywhere")] == PersonaAdapter("resources/my-persona", "personas.everywhere")
    assert pairs[("qwen2.5-7b-it", "none")] is None
    copied = persona_adapter(exp.config, "copied", "llama-3.1-8b-it")
    assert copied == PersonaAdapter(QWEN_SYC, "personas.copied.llama-3.1-8b-it", base_mismatch_intended=True)


def test_phase1_runs_load_the_same_qwen_adapters_as_before(phase1):
    exp = load_experiment(phase1)
    specs = {r.persona: persona_adapter(exp.config, r.persona, r.base) for r in exp.runs}
    assert specs["none"] is None
    assert specs["sycophancy"].spec == QWEN_SYC
    assert specs["goodness"].spec == "hf:maius/qwen-2.5-7b-it-personas@main/goodness"
    assert not specs["sycophancy"].base_mismatch_intended


def test_cell_whose_persona_has_no_adapter_for_its_base_is_refused_at_parse_time(phase1):
    config = with_overlay(phase1, GRID)
    config["cells"]["G1"] = {"model": "llama-3.1-8b-it", "persona": "goodness", "dataset": "insecure"}
    assert _error(config) == (
        "config: cells.G1.persona: persona 'goodness' has no adapter for base llama-3.1-8b-it"
        " (fix: add personas.goodness.llama-3.1-8b-it: <spec> or use a plain string for every base)"
    )


def test_adapter_keyed_by_an_unknown_base_is_refused(phase1):
    config = with_overlay(phase1, {"personas": {"sycophancy": {"llama3": LLAMA_SYC}}})
    msg = _error(config)
    assert msg.startswith("config: personas.sycophancy.llama3: 'llama3' is not defined in models")
    assert "qwen2.5-7b-it" in msg  # the names it may use


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"qwen2.5-7b-it": "hf:maius/x"}, "personas.sycophancy.qwen2.5-7b-it: 'hf:maius/x' is not allowed"),
        ({"qwen2.5-7b-it": {"adapter": QWEN_SYC, "why": 1}}, "personas.sycophancy.qwen2.5-7b-it.why: unknown key"),
        (
            {"qwen2.5-7b-it": {"adapter": QWEN_SYC, "base_mismatch": "ok"}},
            "personas.sycophancy.qwen2.5-7b-it.base_mismatch: 'ok' is not one of",
        ),
        ({"qwen2.5-7b-it": {"base_mismatch": "intended"}}, "personas.sycophancy.qwen2.5-7b-it.adapter: required key"),
        (3, "personas.sycophancy: 3 is not allowed (fix: null (no persona), an adapter spec"),
    ],
)
def test_bad_per_base_entry_names_its_key(phase1, value, expected):
    config = copy.deepcopy(phase1)
    config["personas"]["sycophancy"] = value
    assert expected in _error(config)
