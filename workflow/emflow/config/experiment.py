"""The experiment: the validated config, its run grid, checkpoint steps and typed sections, resolved before
anything runs.

The Snakefile calls ``load_experiment`` once at parse time; everything the DAG needs (runs, steps, paths of
local assets) comes from the returned ``Experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from emflow.config.personas import check_personas
from emflow.config.schedule import analysis_steps, resolve_steps, total_steps
from emflow.config.schema import validate_config
from emflow.config.sections import section_class
from emflow.config.variants import DEFAULT_VARIANT, validate_variants, variant_training
from emflow.errors import EmflowError, user_error
from emflow.io import stable_hash
from emflow.layout import RUN, STEP0


@dataclass(frozen=True)
class Run:
    """One training run: a cell of the grid at one seed, trained with its cell's recipe variant."""

    cell: str
    base: str
    persona: str
    dataset: str
    seed: int
    variant: str = DEFAULT_VARIANT

    @property
    def key(self) -> str:
        return RUN.format(
            base=self.base, persona=self.persona, dataset=self.dataset, variant=self.variant, seed=self.seed
        )

    @property
    def step0_key(self) -> str:
        """What the run's step 0 depends on (base + persona, no EM yet): shared by runs of other datasets and
        variants."""
        return STEP0.format(base=self.base, persona=self.persona, seed=self.seed)


@dataclass
class Experiment:
    config: dict
    source: str = "config"
    runs: list[Run] = field(init=False)
    _sections: dict = field(init=False, default_factory=dict, repr=False)
    _steps: dict = field(init=False, default_factory=dict, repr=False)
    _training: dict = field(init=False, default_factory=dict, repr=False)

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
            variant = cell.get("variant", DEFAULT_VARIANT)
            if variant not in self.variants:
                raise user_error(
                    self.source,
                    f"cells.{name}.variant",
                    f"{variant!r} is not defined in variants",
                    f"use one of: {', '.join(self.variants)}",
                )
        check_personas(c, self.source)  # each cell's persona has an adapter for its model
        self.runs = [
            Run(name, cell["model"], cell["persona"], cell["dataset"], int(seed), cell.get("variant", DEFAULT_VARIANT))
            for name, cell in c["cells"].items()
            for seed in c["seeds"]
        ]
        for ds, variant in {(r.dataset, r.variant) for r in self.runs}:
            self.steps(ds, variant)  # fail at parse time, not mid-DAG
        self._check_analysis()
        if "demo" in c:
            self.demo_archive()  # fail at parse time

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
        ids = [h["id"] for h in a.get("hypotheses", [])]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise user_error(
                self.source, "analysis.hypotheses", f"duplicate id {dup!r}", "give each hypothesis its own id"
            )
        tables = {"base": "models", "persona": "personas", "dataset": "datasets", "variant": "variants"}
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
                        known = self.variants if key == "variant" else self.config.get(tables.get(key), {})
                        if key in tables and name not in known:
                            raise user_error(
                                self.source,
                                f"{where}.{side}.{key}",
                                f"{name!r} is not in {tables[key]}",
                                f"use one of: {', '.join(known)}",
                            )
            self._check_one_variant(where, h)

    def _check_one_variant(self, where: str, h: dict) -> None:
        """A hypothesis side that names no variant must not pool runs of several recipes (a rank-1 run beside an
        r32 one would bias the verdict without a sign)."""
        sides = {"cell": h["cell"], "baseline": {**h["cell"], **h["baseline"]}}  # the baseline inherits the cell's
        for side, filters in sides.items():
            if "variant" in filters:
                continue
            wanted = {k: v if isinstance(v, list) else [v] for k, v in filters.items() if k != "step"}
            runs = [r for r in self.runs if all(getattr(r, k) in map(str, v) for k, v in wanted.items())]
            variants = list(dict.fromkeys(r.variant for r in runs))
            if len(variants) > 1:
                raise user_error(
                    self.source,
                    f"{where}.{side}",
                    f"pools the runs of variants {', '.join(variants)}",
                    "add `variant: <name>` (or a list of names) to the hypothesis's cell or baseline",
                )

    def demo_archive(self):
        """The dataset spec whose archive the demo writes (under demo.out_dir): its password settings are the
        demo_assets rule's."""
        out_dir = self.config["demo"]["out_dir"]
        for spec in self.section("datasets").values():
            if (spec.archive or "").startswith(out_dir):
                return spec
        raise user_error(
            self.source,
            "demo.out_dir",
            f"no dataset archive under {out_dir}",
            f"point datasets.<name>.archive at {out_dir}/em_demo.zip.enc",
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
    def variants(self) -> list[str]:
        """The recipe variants: ``default`` (the training section itself), then ``variants:`` in config order."""
        return [DEFAULT_VARIANT, *self.config.get("variants", {})]

    def training(self, variant: str = DEFAULT_VARIANT):
        """The typed training section of ``variant``: its overrides merged over ``training`` (validated at parse
        time as strictly as ``training`` itself)."""
        if variant not in self._training:
            raw = variant_training(self.config, variant)
            self._training[variant] = section_class("training").build(raw, where=f"variants.{variant}")
        return self._training[variant]

    @property
    def name(self) -> str:
        return self.config["experiment"]

    @cached_property
    def hash(self) -> str:
        return stable_hash(self.config)[:12]

    def train_rows(self, dataset: str) -> int:
        spec = self.section("datasets")[dataset]
        if spec.use_rows is not None and spec.use_rows > spec.rows:
            raise user_error(
                self.source, f"datasets.{dataset}.use_rows", f"{spec.use_rows} > rows ({spec.rows})", "use at most rows"
            )
        if spec.eval_rows >= spec.used_rows:
            raise user_error(
                self.source,
                f"datasets.{dataset}.eval_rows",
                f"{spec.eval_rows} >= {'use_rows' if spec.use_rows else 'rows'} ({spec.used_rows})",
                "keep eval_rows below the rows used",
            )
        return spec.used_rows - spec.eval_rows

    def steps_total(self, dataset: str, variant: str = DEFAULT_VARIANT) -> tuple[int, int]:
        t = variant_training(self.config, variant)
        per_epoch = total_steps(
            self.train_rows(dataset), t["per_device_batch_size"], t["gradient_accumulation_steps"], 1
        )
        return per_epoch * t["epochs"], per_epoch

    def steps(self, dataset: str, variant: str = DEFAULT_VARIANT) -> list[int]:
        """Checkpoint steps of every run on ``dataset`` with recipe ``variant`` (step 0 excluded); resolved once."""
        if (dataset, variant) not in self._steps:
            total, per_epoch = self.steps_total(dataset, variant)
            checkpoints = variant_training(self.config, variant)["checkpoints"]
            try:
                self._steps[dataset, variant] = resolve_steps(checkpoints, total, per_epoch, source=self.source)
            except EmflowError as err:  # a variant's own steps: name its key, where its checkpoints can be set
                if variant == DEFAULT_VARIANT:
                    raise
                head = f"{self.source}: training."
                msg = str(err).replace(head, f"{self.source}: variants.{variant}.", 1)
                raise EmflowError(f"{msg} (the variant inherits training.checkpoints; override it there)") from None
        return list(self._steps[dataset, variant])

    def analysis_steps(self, dataset: str, variant: str = DEFAULT_VARIANT) -> list[int]:
        """Steps saved for the adapter geometry only (``checkpoints.analysis_every``): never generated or judged."""
        every = variant_training(self.config, variant)["checkpoints"].get("analysis_every")
        return analysis_steps(every, self.steps_total(dataset, variant)[0], self.steps(dataset, variant))

    def eval_steps(self, dataset: str, variant: str = DEFAULT_VARIANT) -> list[int]:
        """Steps at which answers are generated and judged: 0 (persona only) plus every checkpoint."""
        return [0, *self.steps(dataset, variant)]

    def plan(self) -> list[dict[str, Any]]:
        return [
            {
                "cell": r.cell,
                "variant": r.variant,
                "run": r.key,
                "steps": self.eval_steps(r.dataset, r.variant),
                "analysis_steps": self.analysis_steps(r.dataset, r.variant),
            }
            for r in self.runs
        ]

    def runs_by_variant(self) -> dict[str, list[Run]]:
        """{variant: its runs}, in variant order (variants no cell uses are left out)."""
        return {
            v: [r for r in self.runs if r.variant == v] for v in self.variants if any(r.variant == v for r in self.runs)
        }


def load_experiment(config: dict, source: str = "config") -> Experiment:
    validate_config(config, source)
    validate_variants(config, source, validate_config)
    return Experiment(config, source)
