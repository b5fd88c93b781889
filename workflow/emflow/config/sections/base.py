"""Typed, frozen config sections: the one shape every stage receives.

The JSON schema (workflow/schemas/config.schema.yaml) validates the merged config once, at parse time; the
config loader then builds one frozen dataclass per section with ``Section.build``, which trusts its input
(the schema already said what is allowed) and only fills in defaults. A field's name is its YAML key. Stages
receive sections and never re-validate; a rule that must pass a section to a command passes ``to_json()``,
so Snakemake's params track exactly the values that change outputs. ``schema_mismatches`` proves, for every
section, that schema and class describe the same keys, requiredness and defaults (tests/config).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from emflow.errors import user_error

S = TypeVar("S", bound="Section")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Section)


def _convert(value: Any, hint: Any, where: str) -> Any:
    if value is None:
        return None
    if _is_section(hint):
        return hint.build(value, where=where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        sections = [a for a in options if _is_section(a)]
        if sections and isinstance(value, Mapping):
            return _convert(value, sections[0], where)
        rest = [a for a in options if not _is_section(a)]
        return _convert(value, rest[0], where) if len(rest) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis or not args:
            item = args[0] if args else Any
            return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping):
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Section:
    """A config section (or part of one) whose fields are its YAML keys."""

    @classmethod
    def build(cls: type[S], data: Mapping[str, Any], *, where: str = "") -> S:
        """The section from an already-validated mapping; keys it does not declare are an internal error
        (schema and class disagree: tests/config checks they never do)."""
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise user_error(where, None, f"expected a mapping, got {type(data).__name__}")
        hints = _hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise user_error(where, unknown[0], "unknown key", f"use one of: {', '.join(sorted(names))}")
        values = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**values)
        except TypeError as err:  # a required key is missing
            raise user_error(where, None, str(err).split("__init__() ")[-1]) from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal sections give equal text, so equal rule params."""
        return canonical_json(self.to_dict())


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: equal values give equal text (what Snakemake compares to decide reruns)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def from_json_obj(cls: type[S], data: Any, *, source: str) -> S:
    return cls.build(data, where=source)


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


_MISSING = dataclasses.MISSING


def schema_mismatches(cls: type[Section], node: dict, defs: dict, where: str) -> list[str]:
    """Every way ``cls`` and the schema ``node`` disagree: keys either side lacks, a required key with a
    default or an optional one without, a default that differs; recursing into nested sections."""
    node = _resolve(node, defs)
    props = node.get("properties", {})
    required = set(node.get("required", []))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = [f"{where}.{k}: in the schema, not in {cls.__name__}" for k in sorted(set(props) - set(fields))]
    out += [f"{where}.{k}: in {cls.__name__}, not in the schema" for k in sorted(set(fields) - set(props))]
    if node.get("additionalProperties", False) is not False and not props:
        out.append(f"{where}: the schema leaves this mapping open, {cls.__name__} does not")
    hints = _hints(cls)
    for name in sorted(set(fields) & set(props)):
        f, prop = fields[name], _resolve(props[name], defs)
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if name in required and has_default:
            out.append(f"{where}.{name}: required by the schema, defaulted in {cls.__name__}")
        if name not in required and not has_default:
            out.append(f"{where}.{name}: optional in the schema, required by {cls.__name__}")
        if "default" in prop:
            default = (
                f.default
                if f.default is not _MISSING
                else (f.default_factory() if f.default_factory is not _MISSING else _MISSING)
            )
            if _plain(default) != prop["default"]:
                out.append(f"{where}.{name}: default {prop['default']!r} in the schema, {default!r} in the class")
        out += _nested(hints[name], prop, defs, f"{where}.{name}")
    return out


def _nested(hint: Any, prop: dict, defs: dict, where: str) -> list[str]:
    if _is_section(hint):
        return schema_mismatches(hint, prop, defs, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    out: list[str] = []
    if origin in (typing.Union, types.UnionType):
        alternatives = [_resolve(a, defs) for a in prop.get("oneOf", prop.get("anyOf", [prop]))]
        objects = [a for a in alternatives if a.get("type") == "object" or "properties" in a]
        for arg in (a for a in args if _is_section(a)):
            out += schema_mismatches(arg, objects[0], defs, where) if objects else [f"{where}: no object in schema"]
    elif origin is tuple and args and prop.get("items"):
        out += _nested(args[0], _resolve(prop["items"], defs), defs, f"{where}[]")
    elif origin in (dict, Mapping) and len(args) == 2 and isinstance(prop.get("additionalProperties"), dict):
        out += _nested(args[1], _resolve(prop["additionalProperties"], defs), defs, f"{where}.*")
    return out
