"""Every path under ``results/<experiment>/``, in one place: the rules' outputs, the commands' defaults, the
analysis's path parsing and ``emflow estimate`` all read it from here.

A run's key is ``<base>/<persona>/<dataset>/<variant>/seed<seed>`` (variant: the cell's recipe variant,
``default`` for the training section itself). Each path method takes a run key and a step; their
defaults are the Snakemake wildcards, so ``Layout(...).judgments()`` is the rule's output pattern and
``Layout(...).judgments(run.key, 3)`` one file.

Step 0 (base + persona, before any EM step) depends only on the base, the persona and the seed: datasets and
recipe variants change what is trained after it. Its answers and judgments are made once per ``STEP0`` key
(``<base>/<persona>/seed<seed>``) under ``step0/`` and copied into each run's step-0 files, so every reader of a
run's files is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emflow.errors import user_error

RUN_KEYS = ("base", "persona", "dataset", "variant", "seed")
CELL_KEYS = ("base", "persona", "dataset", "variant")
RUN = "{base}/{persona}/{dataset}/{variant}/seed{seed}"
STEP = "{step}"
STEP0 = "{base}/{persona}/seed{seed}"

# <base>/<persona>/<dataset>/<variant>/seed<seed>, optionally followed by /step-<step>.jsonl (a generations or judgments
# file) or /checkpoint-<step> (a saved adapter), matched at the end of the POSIX path (names hold no "/").
RUN_PATH_RE = re.compile(
    r"(?:^|/)(?P<base>[^/]+)/(?P<persona>[^/]+)/(?P<dataset>[^/]+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)"
    r"(?:/(?:step-(?P<step>\d+)\.jsonl|checkpoint-(?P<checkpoint>\d+)))?/?$"
)


def checkpoint_dir(run_dir: str | Path, step: int | str) -> str:
    """A run's EM adapter saved at ``step`` (what train writes, generate and the analysis read)."""
    return f"{Path(run_dir).as_posix()}/checkpoint-{step}"


# Inside a run folder: the EM adapters saved for the adapter geometry only (``checkpoints.analysis_every``), never
# generated or judged; part of the train rule's declared output, so Snakemake tracks them with the run.
GEOMETRY_DIR = "geometry"


def geometry_checkpoint_dir(run_dir: str | Path, step: int | str) -> str:
    """A run's EM adapter saved at a geometry-only ``step`` (what train writes, only the aggregation reads)."""
    return f"{Path(run_dir).as_posix()}/{GEOMETRY_DIR}/checkpoint-{step}"


def parse_run_path(path: str | Path) -> dict[str, Any]:
    """``{base, persona, dataset, variant, seed, step}`` from a judgments/generations file, run folder or checkpoint;
    ``step`` is None for a run folder."""
    m = RUN_PATH_RE.search(Path(path).as_posix())
    if not m:
        raise user_error(
            path,
            None,
            "path does not end in <base>/<persona>/<dataset>/<variant>/seed<N>[/step-<N>.jsonl]",
            "pass files from results/<experiment>/judgments/... or folders from results/<experiment>/runs/...",
        )
    step = m["step"] if m["step"] is not None else m["checkpoint"]
    return {
        "base": m["base"],
        "persona": m["persona"],
        "dataset": m["dataset"],
        "variant": m["variant"],
        "seed": int(m["seed"]),
        "step": None if step is None else int(step),
    }


@dataclass(frozen=True)
class Layout:
    """Paths of one experiment's results (``root`` is ``results/<experiment>``)."""

    root: str

    @classmethod
    def of(cls, experiment: str, results_dir: str | Path = "results") -> Layout:
        return cls(f"{Path(results_dir).as_posix()}/{experiment}")

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    def log(self, stage: str, name: str) -> str:
        return f"{self.logs}/{stage}/{name}.log"

    @property
    def questions(self) -> str:
        return f"{self.root}/questions.yaml"

    @property
    def calibration(self) -> str:
        return f"{self.root}/judge_calibration.csv"

    @property
    def secondary_calibration(self) -> str:
        """The calibration table of judge.secondary."""
        return f"{self.root}/judge_calibration_secondary.csv"

    def dataset(self, name: str = "{dataset}", part: str | None = None) -> str:
        """The prepared dataset, or its ``train`` / ``eval`` part."""
        return f"{self.root}/datasets/{name}{'.' + part if part else ''}.jsonl"

    def run_dir(self, run: str = RUN) -> str:
        return f"{self.root}/runs/{run}"

    def checkpoint(self, run: str = RUN, step: int | str = STEP) -> str:
        return checkpoint_dir(self.run_dir(run), step)

    def train_state(self, run: str = RUN) -> str:
        """Resumable trainer state, outside the run folder that Snakemake clears before a rerun."""
        return f"{self.root}/train_state/{run}"

    def generations_dir(self, run: str = RUN) -> str:
        return f"{self.root}/generations/{run}"

    def generations(self, run: str = RUN, step: int | str = STEP) -> str:
        return f"{self.generations_dir(run)}/step-{step}.jsonl"

    def judgments(self, run: str = RUN, step: int | str = STEP) -> str:
        return f"{self.root}/judgments/{run}/step-{step}.jsonl"

    def step0_generations(self, key: str = STEP0) -> str:
        """The step-0 answers of one ``STEP0`` key, shared by its runs (each gets a copy at step-0.jsonl)."""
        return f"{self.root}/step0/generations/{key}.jsonl"

    def step0_judgments(self, key: str = STEP0) -> str:
        """The primary judge's scores of ``step0_generations(key)``, shared the same way."""
        return f"{self.root}/step0/judgments/{key}.jsonl"

    def secondary_judgments(self, run: str = RUN) -> str:
        """judge.secondary's scores of one run: its seeded sample of every step's answers, each row with its step."""
        return f"{self.root}/judgments_secondary/{run}/sample.jsonl"

    @property
    def tables(self) -> str:
        return f"{self.root}/tables"

    def table(self, name: str) -> str:
        return f"{self.tables}/{name}.csv"

    @property
    def figures(self) -> str:
        return f"{self.root}/figures"

    def figure(self, name: str, ext: str = "png") -> str:
        return f"{self.figures}/{name}.{ext}"

    @property
    def report(self) -> str:
        return f"{self.root}/report.html"
