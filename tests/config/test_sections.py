"""Schema and typed sections describe every config key once: checked both ways, for every section."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.schema import SCHEMA_PATH
from emflow.config.sections import SECTIONS, Section, schema_mismatches, section_class
from support.paths import ROOT

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
CONFIGS = [["config.yaml"], ["config.yaml", "config/demo.yaml"], ["config.yaml", "config/replication.yaml"]]


def _node(key: str) -> dict:
    node = SCHEMA["properties"][key]
    return node["additionalProperties"] if key == "datasets" else node


@pytest.mark.parametrize("key", sorted(SECTIONS))
def test_section_class_and_schema_agree(key):
    """Every schema key is a field and every field a schema key, with the same requiredness and defaults."""
    assert schema_mismatches(section_class(key), _node(key), SCHEMA.get("$defs", {}), key) == []


def test_every_top_level_section_with_keys_has_a_class():
    objects = {k for k, v in SCHEMA["properties"].items() if "properties" in v or k == "datasets"}
    assert objects <= set(SECTIONS), f"sections without a typed class: {sorted(objects - set(SECTIONS))}"


def test_mismatches_are_found_both_ways():
    """The checker itself: a field the schema lacks and a schema key the class lacks are both reported."""

    @dataclasses.dataclass(frozen=True)
    class Small(Section):
        a: int
        extra: int = 0

    node = {"type": "object", "required": ["a", "b"], "properties": {"a": {}, "b": {}}}
    found = schema_mismatches(Small, node, {}, "x")
    assert any("x.b: in the schema" in m for m in found)
    assert any("x.extra: in Small, not in the schema" in m for m in found)


@pytest.mark.parametrize("files", CONFIGS, ids=lambda f: "+".join(f))
def test_shipped_configs_build_every_section(files):
    """The shipped configs become typed sections whose dicts keep every configured value."""
    config = load_config_files([ROOT / f for f in files])
    exp = load_experiment(config)
    for key in SECTIONS:
        section = exp.section(key)
        raw = config.get(key)
        if raw is None:
            assert section is None
            continue
        built = {n: s.to_dict() for n, s in section.items()} if key == "datasets" else section.to_dict()
        _assert_contains(built, raw, key)


def _assert_contains(built, raw, where):
    if isinstance(raw, dict):
        for k, v in raw.items():
            assert k in built, f"{where}.{k} lost"
            _assert_contains(built[k], v, f"{where}.{k}")
    elif isinstance(raw, list):
        assert isinstance(built, list) and len(built) == len(raw), f"{where}: {built!r} != {raw!r}"
        for i, (b, r) in enumerate(zip(built, raw, strict=True)):
            _assert_contains(b, r, f"{where}[{i}]")
    else:
        assert built == raw, f"{where}: {built!r} != {raw!r}"
