"""Recipe variants: named overrides of the ``training:`` section, so a grid can sweep the recipe (rank, layers,
learning rate) as cells do personas. ``variants.<name>`` holds any training keys; dicts merge into the base
recipe and lists replace, like config overlays. A cell picks one with ``variant:`` (default: ``default``, the
training section itself). The variant is part of every run's identity: its folder, every table's columns.
"""

from __future__ import annotations

import copy
from typing import Any

from emflow.errors import EmflowError, user_error

DEFAULT_VARIANT = "default"  # the training section unchanged; a name no variant may take


def merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: dicts merge recursively, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def variant_training(config: dict, variant: str) -> dict[str, Any]:
    """The raw training section of ``variant`` (``default``: the training section itself)."""
    if variant == DEFAULT_VARIANT:
        return config["training"]
    return merge(config["training"], config.get("variants", {})[variant])


def validate_variants(config: dict, source: str, validate) -> None:
    """Each variant merged over ``training`` must pass the schema as ``training`` does; an error names the
    variant's key (``variants.<name>.<key>``). ``validate(config, source)`` is the config's one validation."""
    for name in config.get("variants") or {}:
        if name == DEFAULT_VARIANT:
            raise user_error(
                source,
                f"variants.{name}",
                "`default` is the training section's own name",
                "give the variant another name",
            )
        try:
            validate({**config, "training": variant_training(config, name)}, source)
        except EmflowError as err:
            msg = str(err)
            head = f"{source}: training"
            if not msg.startswith(head):
                raise
            raise EmflowError(f"{source}: variants.{name}{msg[len(head) :]}") from None
