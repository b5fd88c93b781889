"""``emflow figures``: every figure of ``names.FIGURES`` from the aggregate tables and the judged answers, saved
as PNG and PDF at a size that keeps each facet panel readable."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pandas as pd
import plotnine as p9
from tqdm import tqdm

from emflow.analysis import figure_data as data
from emflow.analysis import geometry_plots as gplots
from emflow.analysis import plots
from emflow.analysis.definitions import EMDefinition
from emflow.analysis.judgments import load_judgments
from emflow.analysis.names import FIGURES
from emflow.analysis.tables import read_table
from emflow.config.sections.analysis import Figures
from emflow.errors import user_error

log = logging.getLogger(__name__)


def figure_size(df: pd.DataFrame, rows: str | list[str] | None, cols: str | list[str] | None) -> tuple[float, float]:
    """Inches that keep each facet panel readable, plus room for the title and legend."""
    nrow = df[rows].drop_duplicates().shape[0] if rows is not None and not df.empty else 1
    ncol = df[cols].drop_duplicates().shape[0] if cols is not None and not df.empty else 1
    return panel_size(nrow, ncol)


def panel_size(nrow: int, ncol: int) -> tuple[float, float]:
    return (max(6.5, 2.2 + 3.2 * max(ncol, 1)), max(3.5, 1.2 + 2.6 * max(nrow, 1)))


def save_figure(plot: p9.ggplot, out_dir: str | Path, name: str, *, dpi: int, size: tuple[float, float]) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.pdf`` atomically; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        dest = out_dir / f"{name}.{ext}"
        # plotnine picks the format from the suffix, so the temporary file keeps it.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp.{ext}", dir=out_dir)
        os.close(fd)
        try:
            # Large studies get large figures on purpose (readable panels), hence limitsize=False.
            plot.save(tmp, dpi=dpi, width=size[0], height=size[1], units="in", verbose=False, limitsize=False)
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        paths.append(dest)
    return paths


def fold_variant(df: pd.DataFrame, variants) -> pd.DataFrame:
    """With several recipe variants, each variant gets its own panels: the facet label ``dataset`` becomes
    ``<dataset> · <variant>`` (every figure facets by dataset), so no figure pools two recipes; one variant
    leaves the labels as they are."""
    if len(variants) < 2 or "variant" not in df or "dataset" not in df or df.empty:
        return df
    return df.assign(dataset=df["dataset"].astype(str) + " · " + df["variant"].astype(str))


def _definition_row(tables_dir: Path, definition: str) -> pd.Series:
    definitions = read_table(tables_dir, "definitions").set_index("definition")
    if definition not in definitions.index:
        raise user_error(
            "params", "definition", f"unknown definition {definition!r}", f"use one of {sorted(definitions.index)}"
        )
    return definitions.loc[definition]


def build_figures(
    tables_dir: str | Path,
    judgments: list[str | Path],
    definition: str,
    sizes: dict[str, float] | None = None,
    settings: Figures | None = None,
) -> dict[str, tuple[p9.ggplot, tuple[float, float]]]:
    """Every figure of ``FIGURES`` with its size, from the aggregate tables and the judged answers.

    ``sizes``: billions of parameters per base model (see ``figure_data.model_sizes``); bases missing there are
    parsed from their names. ``settings``: config ``analysis.figures`` (the response examples' questions and seed).
    """
    settings = settings or Figures()
    tables_dir = Path(tables_dir)
    d = _definition_row(tables_dir, definition)
    variants = read_table(tables_dir, "em_by_cell")["variant"].astype(str).unique()

    def table(name: str) -> pd.DataFrame:
        return fold_variant(read_table(tables_dir, name), variants)

    cells = table("em_by_cell")
    traj = data.prepare_trajectory(cells, definition)
    # Rows without a rate: answers exist but none is in the definition's population (e.g. none coherent).
    no_rate = f"no answer in the {definition} population (e.g. none coherent): EM rate undefined"
    in_table = not data.select_definition(cells, definition, "em_by_cell.csv").empty
    empty_reason = no_rate if traj.empty and in_table else None
    loss = data.prepare_loss(table("training_steps"))
    answers = fold_variant(load_judgments(judgments)[0], variants)
    scatter = data.prepare_scatter(answers)
    norms = data.prepare_norms(table("lora_norms"), table("em"), definition)
    final = data.prepare_final(cells, definition, sizes)
    adapter_path, em = table("adapter_trajectory"), table("em")
    rotation = gplots.prepare_rotation(adapter_path, em, definition)
    pca = gplots.prepare_pca(adapter_path, em, definition)
    by_seed = data.prepare_by_seed(table("em"), cells, definition)
    questions = table("per_question")
    by_question = data.prepare_by_question(questions, definition)
    em_def = EMDefinition.from_row({"definition": definition, **d.to_dict()})
    examples = data.prepare_examples(answers, questions, em_def, settings.example_questions, settings.example_seed)
    grid = ("dataset", "base")
    built = {
        "em_trajectory": (plots.em_trajectory(traj, definition, empty_reason), figure_size(traj, *grid)),
        "coherence_trajectory": (plots.coherence_trajectory(traj, definition), figure_size(traj, *grid)),
        "loss_curves": (plots.loss_curves(loss), figure_size(loss, *grid)),
        "aligned_vs_coherent": (
            plots.aligned_vs_coherent(scatter, float(d["aligned_threshold"]), float(d["coherent_above"]), definition),
            figure_size(scatter, "stage", "persona"),
        ),
        "lora_norms": (plots.lora_norms(norms, definition), figure_size(norms, ["dataset", "base"], "panel")),
        "domain_by_size": (plots.domain_by_size(final, definition, empty_reason), figure_size(final, None, "persona")),
        "adapter_rotation": (
            gplots.adapter_rotation(rotation, definition),
            figure_size(rotation, ["dataset", "panel"], "base"),
        ),
        "adapter_pca": (gplots.adapter_pca(pca, definition), panel_size(*gplots.pca_grid(pca))),
        "em_by_seed": (plots.em_by_seed(*by_seed, definition), figure_size(by_seed[0], *grid)),
        "em_by_question": (plots.em_by_question(by_question, definition), data.question_figure_size(by_question)),
        "response_examples": (plots.response_examples(examples, definition), data.examples_figure_size(examples)),
    }
    return {name: built[name] for name in FIGURES}


def figures(
    *,
    tables_dir: str | Path,
    judgments: list[str | Path],
    out_dir: str | Path,
    definition: str,
    settings: Figures,
    models: dict[str, str] | None = None,
) -> dict[str, list[Path]]:
    """Render and save every figure as PNG + PDF under ``out_dir``; ``models`` (config ``models``: base name ->
    spec) lets the size figure parse a size from a hub id when the base's name states none."""
    models = models or {}
    explicit = settings.model_sizes
    sizes = data.model_sizes(set(models) | set(explicit), models, explicit)
    built = build_figures(tables_dir, judgments, definition, sizes, settings)
    out = {}
    for name, (plot, size) in tqdm(built.items(), desc="render figures", unit="figure", disable=None):
        out[name] = save_figure(plot, out_dir, name, dpi=settings.dpi, size=size)
        log.info("wrote %s", ", ".join(map(str, out[name])))
    return out
