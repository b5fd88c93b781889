"""One typed, frozen class per config section (see base.py); ``SECTIONS`` maps each top-level key to its
class, which the config loader builds once and every stage receives."""

from __future__ import annotations

import importlib

from emflow.config.sections.base import Section, from_json_obj, schema_mismatches

# top-level config key -> "module:Class" under emflow.config.sections
SECTIONS = {
    "training": "training:Training",
    "generation": "generation:Generation",
    "judge": "judge:Judge",
    "datasets": "datasets:DatasetSpec",  # a mapping name -> DatasetSpec
    "questions": "questions:Questions",
    "analysis": "analysis:Analysis",
    "demo": "demo:Demo",
}


def section_class(key: str) -> type[Section]:
    module, cls = SECTIONS[key].split(":")
    return getattr(importlib.import_module(f"emflow.config.sections.{module}"), cls)


__all__ = ["SECTIONS", "Section", "from_json_obj", "schema_mismatches", "section_class"]
