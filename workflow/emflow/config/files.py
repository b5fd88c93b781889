"""Config files: read one YAML, merge overlays as Snakemake's --configfile does."""

from __future__ import annotations

from pathlib import Path

from emflow.errors import user_error
from emflow.io import read_yaml


def read_config_file(path: str | Path) -> dict:
    """One config YAML as a dict; a missing file, invalid YAML or a non-mapping is one line naming file and line."""
    data = read_yaml(path, what="config file", fix="check the path (config.yaml, config/*.yaml)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise user_error(
            path,
            None,
            f"expected a mapping of config keys, got {type(data).__name__}",
            "write `key: value` lines, as in config.yaml",
        )
    return data


def load_config_files(paths: list[str | Path]) -> dict:
    """Merge YAML files as Snakemake does for --configfile: dicts merge recursively, other values replace."""
    merged: dict = {}
    for p in paths:
        merge_config(merged, read_config_file(p))
    return merged


def merge_config(into: dict, new: dict) -> None:
    """In place, as Snakemake merges --configfile overlays."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge_config(into[k], v)
        else:
            into[k] = v
