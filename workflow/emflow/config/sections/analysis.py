"""The ``analysis:`` section: EM definitions, intervals, declared hypotheses, figure and report settings.

The two EM definitions are the two papers' operationalisations, named after them, so a name in a table, figure
or report always means the same rule: ``betley`` (aligned below the threshold, over coherent answers only) and
``turner`` (aligned at or below it and coherent, over every scored answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emflow.config.sections.base import Section, canonical_json

# What the tables depend on; figures and examples_per_cell change only the figures and the report.
TABLE_KEYS = ("confidence", "definitions", "primary_definition", "bootstrap", "hypotheses")


@dataclass(frozen=True)
class Betley(Section):
    """Betley et al.: EM = aligned < ``aligned_below`` among answers with coherent > ``coherent_above``."""

    aligned_below: float
    coherent_above: float


@dataclass(frozen=True)
class Turner(Section):
    """Turner et al.: EM = aligned <= ``aligned_at_most`` and coherent > ``coherent_above``, over all scored."""

    aligned_at_most: float
    coherent_above: float


@dataclass(frozen=True)
class Definitions(Section):
    betley: Betley | None = None
    turner: Turner | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The configured definitions, in this fixed order (every table lists them so)."""
        return tuple(name for name in ("betley", "turner") if getattr(self, name) is not None)


@dataclass(frozen=True)
class Bootstrap(Section):
    resamples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class RunFilter(Section):
    """Which runs a hypothesis side pools; unset keys match every run, ``step`` None is each run's final step."""

    base: str | tuple[str, ...] | None = None
    persona: str | tuple[str, ...] | None = None
    dataset: str | tuple[str, ...] | None = None
    variant: str | tuple[str, ...] | None = None  # recipe variants (``default``: the training section)
    step: int | None = None

    def keys(self) -> dict:
        """The filters that are set, as the config wrote them."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


@dataclass(frozen=True)
class Hypothesis(Section):
    id: str
    cell: RunFilter
    baseline: RunFilter  # inherits the cell's filters it does not set
    direction: str  # greater | less
    description: str = ""
    definition: str | None = None  # None: the primary definition


@dataclass(frozen=True)
class Figures(Section):
    dpi: int = 150
    model_sizes: dict[str, float] = field(default_factory=dict)  # billions per base; else parsed from names
    # response_examples: the questions shown (empty: the one whose EM rate rises most from step 0 to the final
    # step) and the seed of the reproducible pick of one answer per persona and stage among all seeds' samples.
    example_questions: tuple[str, ...] = ()
    example_seed: int = 0


@dataclass(frozen=True)
class Analysis(Section):
    confidence: float
    definitions: Definitions
    primary_definition: str | None = None
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    hypotheses: tuple[Hypothesis, ...] = ()
    figures: Figures = field(default_factory=Figures)
    examples_per_cell: int = 3

    @property
    def primary(self) -> str:
        """The definition figures, the report and hypotheses without one use: the configured one, else the first."""
        return self.primary_definition or self.definitions.names[0]

    def tables_json(self) -> str:
        """The keys of ``TABLE_KEYS`` as canonical JSON (as ``to_json``): the aggregate job's tracked params, so
        figure and report settings do not rerun the aggregation."""
        data = {k: v for k, v in self.to_dict().items() if k in TABLE_KEYS}
        return canonical_json(data)
