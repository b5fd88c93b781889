"""Experiment config: schema validation, the run grid and checkpoint steps, resolved before anything runs.

The Snakefile calls ``load_experiment`` once at parse time; everything the DAG needs (runs, steps, paths of
local assets) comes from the returned ``Experiment``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from emflow.config.schedule import resolve_steps, total_steps
from emflow.config.sections import section_class
from emflow.errors import user_error
from emflow.io import read_yaml, stable_hash
from emflow.layout import RUN

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
    raise user_error(source, where, err.message, f"see {SCHEMA_PATH.name}")


@dataclass(frozen=True)
class Run:
    """One training run: a cell of the grid at one seed."""

    cell: str
    base: str
    persona: str
    dataset: str
    seed: int

    @property
    def key(self) -> str:
        return RUN.format(base=self.base, persona=self.persona, dataset=self.dataset, seed=self.seed)


@dataclass
class Experiment:
    config: dict
    source: str = "config"
    runs: list[Run] = field(init=False)
    _sections: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        c = self.config
        for name, cell in c["cells"].items():
            for key, table in (("model", "models"), ("persona", "personas"), ("dataset", "datasets")):
                if cell[key] not in c[table]:
                    raise user_error(
                        self.source,
                        f"cells.{name}.{key}",
                        f"{cell[key]!r} is not defined in {table}",
                        f"use one of: {', '.join(c[table])}",
                    )
        self.runs = [
            Run(name, cell["model"], cell["persona"], cell["dataset"], int(seed))
            for name, cell in c["cells"].items()
            for seed in c["seeds"]
        ]
        for ds in {r.dataset for r in self.runs}:
            self.steps(ds)  # fail at parse time, not mid-DAG
        self._check_analysis()

    def _check_analysis(self) -> None:
        """Names the analysis refers to must exist: a typo would otherwise surface after every run is judged."""
        a = self.config["analysis"]
        defs = list(a["definitions"])
        if a.get("primary_definition", defs[0]) not in defs:
            raise user_error(
                self.source,
                "analysis.primary_definition",
                f"{a['primary_definition']!r} is not defined",
                f"use one of: {', '.join(defs)}",
            )
        tables = {"base": "models", "persona": "personas", "dataset": "datasets"}
        for i, h in enumerate(a.get("hypotheses", [])):
            where = f"analysis.hypotheses[{i}] ({h['id']})"
            if h.get("definition", defs[0]) not in defs:
                raise user_error(
                    self.source,
                    f"{where}.definition",
                    f"{h['definition']!r} is not defined",
                    f"use one of: {', '.join(defs)}",
                )
            for side in ("cell", "baseline"):
                for key, value in h[side].items():
                    for name in value if isinstance(value, list) else [value]:
                        if key in tables and name not in self.config[tables[key]]:
                            raise user_error(
                                self.source,
                                f"{where}.{side}.{key}",
                                f"{name!r} is not in {tables[key]}",
                                f"use one of: {', '.join(self.config[tables[key]])}",
                            )

    def section(self, key: str):
        """The typed, frozen section ``key`` (emflow.config.sections), built once from the validated config;
        ``datasets`` is a mapping of name to its spec; an absent optional section (``demo``) is None."""
        if key not in self._sections:
            cls = section_class(key)
            raw = self.config.get(key)
            if raw is None:
                built = None
            elif key == "datasets":
                built = {name: cls.build(spec, where=f"datasets.{name}") for name, spec in raw.items()}
            else:
                built = cls.build(raw, where=key)
            self._sections[key] = built
        return self._sections[key]

    @property
    def name(self) -> str:
        return self.config["experiment"]

    @cached_property
    def hash(self) -> str:
        return stable_hash(self.config)[:12]

    def train_rows(self, dataset: str) -> int:
        spec = self.config["datasets"][dataset]
        rows, eval_rows = spec["rows"], spec.get("eval_rows", 0)
        if eval_rows >= rows:
            raise user_error(
                self.source,
                f"datasets.{dataset}.eval_rows",
                f"{eval_rows} >= rows ({rows})",
                "keep eval_rows below rows",
            )
        return rows - eval_rows

    def steps_total(self, dataset: str) -> tuple[int, int]:
        t = self.config["training"]
        per_epoch = total_steps(
            self.train_rows(dataset), t["per_device_batch_size"], t["gradient_accumulation_steps"], 1
        )
        return per_epoch * t["epochs"], per_epoch

    def steps(self, dataset: str) -> list[int]:
        """Checkpoint steps of every run on ``dataset`` (step 0 excluded)."""
        total, per_epoch = self.steps_total(dataset)
        return resolve_steps(self.config["training"]["checkpoints"], total, per_epoch, source=self.source)

    def eval_steps(self, dataset: str) -> list[int]:
        """Steps at which answers are generated and judged: 0 (persona only) plus every checkpoint."""
        return [0, *self.steps(dataset)]

    def plan(self) -> list[dict[str, Any]]:
        return [{"cell": r.cell, "run": r.key, "steps": self.eval_steps(r.dataset)} for r in self.runs]


def load_experiment(config: dict, source: str = "config") -> Experiment:
    validate_config(config, source)
    return Experiment(config, source)


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


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="emflow plan", description="Print the run grid and checkpoint steps.")
    ap.add_argument("configfiles", nargs="+", help="config.yaml, then overlays (merged like --configfile)")
    args = ap.parse_args(argv)
    exp = load_experiment(load_config_files(args.configfiles), source=" + ".join(args.configfiles))
    print(json.dumps({"experiment": exp.name, "config_hash": exp.hash, "runs": exp.plan()}, indent=2))
