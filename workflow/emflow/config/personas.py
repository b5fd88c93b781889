"""Persona adapters per base model: which adapter a run of (base, persona) loads, and the config key it comes from.

``personas.<name>`` is ``null`` (no persona), one adapter spec meaning "for every base", or a mapping from base
model name (a key of ``models``) to that base's adapter: a spec, or ``{adapter: <spec>, base_mismatch:
intended}`` when the adapter's recorded base model (``base_model_name_or_path``) differs from the base on purpose.
The schema validates the forms; this module resolves them and checks, at parse time, that every cell's persona
has an adapter for the cell's model.
"""

from __future__ import annotations

from dataclasses import dataclass

from emflow.errors import user_error

INTENDED = "intended"  # personas.<p>.<base>.base_mismatch: the adapter records another base model on purpose


@dataclass(frozen=True)
class PersonaAdapter:
    """The adapter persona ``persona`` loads on base ``base``."""

    spec: str  # hf:OWNER/NAME@REVISION[/SUBFOLDER] or a local directory
    field: str  # the config key that gives it: personas.<p> (every base) or personas.<p>.<base>
    base_mismatch_intended: bool = False


def persona_adapter(config: dict, persona: str, base: str, source: str = "config") -> PersonaAdapter | None:
    """The adapter of ``persona`` for base model ``base``, or None for a ``null`` persona (no persona)."""
    value = config["personas"][persona]
    if value is None:
        return None
    if isinstance(value, str):
        return PersonaAdapter(value, f"personas.{persona}")
    if base not in value:
        raise user_error(
            source,
            f"personas.{persona}",
            f"has no adapter for base {base}",
            f"add personas.{persona}.{base}: <spec> or use a plain string for every base",
        )
    entry, field = value[base], f"personas.{persona}.{base}"
    if isinstance(entry, str):
        return PersonaAdapter(entry, field)
    return PersonaAdapter(entry["adapter"], field, entry.get("base_mismatch") == INTENDED)


def check_personas(config: dict, source: str = "config") -> None:
    """Every per-base key names a model, and every cell's persona has an adapter for the cell's model."""
    models = config["models"]
    for persona, value in config["personas"].items():
        for base in value if isinstance(value, dict) else ():
            if base not in models:
                raise user_error(
                    source,
                    f"personas.{persona}.{base}",
                    f"{base!r} is not defined in models",
                    f"key each adapter by a model name: {', '.join(models)}",
                )
    for cell, spec in config["cells"].items():
        value = config["personas"][spec["persona"]]
        if isinstance(value, dict) and spec["model"] not in value:
            raise user_error(
                source,
                f"cells.{cell}.persona",
                f"persona {spec['persona']!r} has no adapter for base {spec['model']}",
                f"add personas.{spec['persona']}.{spec['model']}: <spec> or use a plain string for every base",
            )
