"""The config's one validation: the JSON schema (workflow/schemas/config.schema.yaml) over the merged config,
with the first error as one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import yaml

from emflow.errors import user_error

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _path_of(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_config(config: dict, source: str = "config") -> None:
    """Raise a one-line EmflowError naming the first offending key (schema order, deepest first)."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (-len(e.absolute_path), str(e.absolute_path)))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors) if len(errors) > 1 else errors[0]
    # A oneOf with a description (asset and dataset sources) says the fix better than its alternatives do.
    if err.validator == "oneOf" and "description" in err.schema:
        got = f"{err.instance!r} is not allowed" if isinstance(err.instance, (str, int, float)) else "invalid"
        raise user_error(source, _path_of(err), got, err.schema["description"])
    # Otherwise prefer the most specific error inside oneOf/anyOf alternatives.
    while err.context:
        err = sorted(err.context, key=lambda e: -len(e.absolute_path))[0]
    where = _path_of(err)
    # A pattern with a description (safe names, URLs) says what is allowed better than the regex does.
    if err.validator == "pattern" and "description" in err.schema:
        raise user_error(source, where, f"{err.instance!r} is not allowed", err.schema["description"])
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        raise user_error(
            source,
            ".".join(filter(None, [where if where != "<top level>" else "", extra[0]])),
            "unknown key",
            f"use one of: {allowed}",
        )
    if err.validator == "required":  # name the missing key itself, with what it is for
        missing = next(k for k in err.validator_value if k not in err.instance)
        about = err.schema.get("properties", {}).get(missing, {}).get("description")
        key = missing if where == "<top level>" else f"{where}.{missing}"
        fix = f"set `{missing}`" + (f": {about}" if about else "")
        raise user_error(source, key, "required key is missing", fix)
    raise user_error(source, where, err.message, f"see {SCHEMA_PATH.name}")
