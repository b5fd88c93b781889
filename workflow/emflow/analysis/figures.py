"""plotnine figures: one function per figure (tidy DataFrame in, ggplot out); saving is separate.

``prepare_*`` functions turn the aggregate tables into the tidy frames the figure functions take.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import plotnine as p9
from mizani.labels import label_percent
from tqdm import tqdm

from emflow.analysis.aggregate import OUTPUT_FILES, RUN_KEYS, load_json_arg, load_judgments, setup_logging
from emflow.errors import user_error

log = logging.getLogger(__name__)

FIGURES = [
    "em_trajectory",
    "coherence_trajectory",
    "loss_curves",
    "aligned_vs_coherent",
    "lora_norms",
    "domain_by_size",
]
STEP_LABEL = "Training step (0 = persona only, before EM training)"
NO_PERSONA = "none"
DEFAULT_DPI = 150  # used only when config analysis.figures.dpi is absent
# Grey for the no-persona baseline, then colour-blind-safe Okabe-Ito hues for personas.
BASELINE_COLOUR = "#7f7f7f"
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
NORM_PANELS = {"norm_A": "‖A‖", "norm_B": "‖B‖", "norm_BA": "‖B·A‖"}  # Frobenius, summed over modules
EM_PANEL = "EM rate"
RATE_AXIS_MIN_TOP = 0.1  # rate axes reach at least 10 %: all-zero rates otherwise get an axis from -50 % to 50 %
# "7b", "0.5B", "135m" in a base model's name or hub id: the parameter count the size figure orders by.
SIZE_RE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)\s*([bBmM])(?![A-Za-z0-9])")


def _persona_order(personas: Iterable[str]) -> list[str]:
    names = sorted(set(map(str, personas)))
    return ([NO_PERSONA] if NO_PERSONA in names else []) + [p for p in names if p != NO_PERSONA]


def _persona_scales(personas: Iterable[str], aesthetics: tuple[str, ...] = ("color", "fill")) -> p9.scale_color_manual:
    order = _persona_order(personas)
    hues = iter(PALETTE * (1 + len(order) // len(PALETTE)))
    values = {p: BASELINE_COLOUR if p == NO_PERSONA else next(hues) for p in order}
    return p9.scale_color_manual(values=values, breaks=order, aesthetics=list(aesthetics), name="Persona")


def _categorical(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "persona" in df:
        df["persona"] = pd.Categorical(df["persona"].astype(str), categories=_persona_order(df["persona"]))
    return df


def _theme() -> p9.theme:
    return p9.theme_bw(base_size=10) + p9.theme(
        legend_position="right", strip_background=p9.element_rect(fill="#eeeeee"), plot_title=p9.element_text(size=11)
    )


def _facets(rows: str = "dataset", cols: str = "base") -> p9.facet_grid:
    return p9.facet_grid(rows=rows, cols=cols, labeller="label_both")


def empty_figure(title: str, reason: str) -> p9.ggplot:
    """Placeholder so the figure file always exists (e.g. a study without saved checkpoints)."""
    return (
        p9.ggplot()
        + p9.annotate("text", x=0, y=0, label=reason, size=11)
        + p9.labs(title=title)
        + p9.theme_void()
        + p9.theme(figure_size=(6, 3), plot_margin=0.04)
    )


# ------------------------------------------------------------------------------------------- preparing


def _select_definition(df: pd.DataFrame, definition: str, table: str) -> pd.DataFrame:
    if not df.empty and definition not in set(df["definition"]):
        raise user_error(
            table, "definition", f"no rows for definition {definition!r}", f"use one of {sorted(set(df['definition']))}"
        )
    return df[df["definition"] == definition]


def prepare_trajectory(em_by_cell: pd.DataFrame, definition: str) -> pd.DataFrame:
    """em_by_cell rows of one definition with a rate present."""
    df = _select_definition(em_by_cell, definition, "em_by_cell.csv")
    return df.dropna(subset=["em_rate"]).reset_index(drop=True)


def prepare_loss(training_steps: pd.DataFrame) -> pd.DataFrame:
    df = training_steps.dropna(subset=["loss"]).copy()
    if "split" not in df:
        df["split"] = "train"
    df["run"] = df["persona"].astype(str) + " / seed " + df["seed"].astype(str)
    return df


def prepare_scatter(answers: pd.DataFrame) -> pd.DataFrame:
    """Scored answers at step 0 and at each run's final step, labelled by stage."""
    df = answers.dropna(subset=["aligned", "coherent"]).copy()
    if df.empty:
        return df.assign(stage=pd.Series(dtype=str))
    final = df.groupby(RUN_KEYS)["step"].transform("max")
    df = df[(df["step"] == 0) | (df["step"] == final)].copy()
    df["stage"] = pd.Categorical(
        ["step 0 (persona only)" if s == 0 else "final step" for s in df["step"]],
        categories=["step 0 (persona only)", "final step"],
    )
    return df


def prepare_norms(lora_norms: pd.DataFrame, em: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Long frame: one row per run × step × panel (‖A‖, ‖B‖, ‖B·A‖, EM rate)."""
    em = _select_definition(em, definition, "em.csv")
    keys = RUN_KEYS + ["step"]
    parts = [lora_norms[keys].assign(panel=label, value=lora_norms[col]) for col, label in NORM_PANELS.items()]
    runs = lora_norms[RUN_KEYS].drop_duplicates()
    rate = em.merge(runs, on=RUN_KEYS)[keys + ["em_rate"]].rename(columns={"em_rate": "value"}).assign(panel=EM_PANEL)
    df = pd.concat([*parts, rate], ignore_index=True).dropna(subset=["value"])
    df["panel"] = pd.Categorical(df["panel"], categories=[*NORM_PANELS.values(), EM_PANEL])
    df["run"] = df["persona"].astype(str) + " / seed " + df["seed"].astype(str)
    return df


def parse_model_size(*names: str | None) -> float:
    """Parameters in billions from the first name that states them ("qwen2.5-7b-it" → 7, "SmolLM-135M" → 0.135).

    NaN when none does. "2.5" in "qwen2.5" carries no unit, so it is not mistaken for a size.
    """
    for name in names:
        for m in SIZE_RE.finditer(str(name or "")):
            value = float(m[1])
            return value if m[2] in "bB" else value / 1000.0
    return math.nan


def model_sizes(
    bases: Iterable[str], models: dict[str, Any] | None, explicit: dict[str, Any] | None
) -> dict[str, float]:
    """Billions of parameters per base: config ``analysis.figures.model_sizes`` first, else parsed from the base's
    name, else from its ``models.<name>`` spec; NaN when unknown."""
    models, explicit = models or {}, explicit or {}
    out = {}
    for base in bases:
        if base in explicit:
            out[base] = float(explicit[base])
        else:
            out[base] = parse_model_size(base, models.get(base))
    return out


def _size_label(base: str, size: float) -> str:
    return base if math.isnan(size) else f"{base}\n({size:g}B)"


def prepare_final(em_by_cell: pd.DataFrame, definition: str, sizes: dict[str, float] | None = None) -> pd.DataFrame:
    """Each cell's row at its final step, with the base's size and a ``base_label`` ordered by size.

    Bases of unknown size come after the sized ones, by name.
    """
    df = prepare_trajectory(em_by_cell, definition)
    if df.empty:
        return df.assign(size_b=pd.Series(dtype=float), base_label=pd.Series(dtype=str))
    final = df.groupby(["base", "persona", "dataset"])["step"].transform("max")
    df = df[df["step"] == final].reset_index(drop=True)
    sizes = {**model_sizes(df["base"].astype(str).unique(), None, None), **(sizes or {})}
    df["size_b"] = [sizes.get(str(b), math.nan) for b in df["base"]]
    order = sorted(sizes.items(), key=lambda kv: (math.isnan(kv[1]), kv[1] if not math.isnan(kv[1]) else 0, kv[0]))
    labels = [_size_label(b, v) for b, v in order if b in set(df["base"].astype(str))]
    df["base_label"] = pd.Categorical(
        [_size_label(str(b), v) for b, v in zip(df["base"], df["size_b"])], categories=labels
    )
    return df


# --------------------------------------------------------------------------------------------- figures


def _rate_trajectory(df: pd.DataFrame, y: str, lo: str, hi: str, title: str, ylab: str) -> p9.ggplot:
    df = _categorical(df)
    # Each persona's step-0 rate (persona alone, no EM training) carried across as a dashed reference, so the
    # rise due to EM training reads directly off the plot.
    baseline = df[df["step"] == 0][["base", "dataset", "persona", y]]
    return (
        p9.ggplot(df, p9.aes("step", y, color="persona", fill="persona"))
        + p9.geom_hline(baseline, p9.aes(yintercept=y, color="persona"), linetype="dashed", size=0.4, alpha=0.7)
        + p9.geom_ribbon(p9.aes(ymin=lo, ymax=hi), alpha=0.15, color="none")
        + p9.geom_line(size=0.8)
        + p9.geom_point(size=1.8)
        + _facets()
        + _persona_scales(df["persona"])
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, None))
        + p9.expand_limits(y=RATE_AXIS_MIN_TOP)
        + p9.labs(title=title, x=STEP_LABEL, y=ylab)
        + _theme()
    )


def em_trajectory(df: pd.DataFrame, definition: str, empty_reason: str | None = None) -> p9.ggplot:
    """EM rate vs step per persona, pooled over seeds, with bootstrap CI ribbons."""
    if df.empty:
        return empty_figure("EM rate over training", empty_reason or "no judged answers")
    return _rate_trajectory(
        df, "em_rate", "em_ci_low", "em_ci_high", f"EM rate over training ({definition} definition)", "EM rate"
    )


def coherence_trajectory(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """Share of coherent answers vs step per persona."""
    if df.empty:
        return empty_figure("Coherent answers over training", "no judged answers")
    return _rate_trajectory(
        df,
        "coherent_rate",
        "coherent_ci_low",
        "coherent_ci_high",
        f"Coherent answers over training ({definition})",
        "Coherent answers",
    )


def loss_curves(df: pd.DataFrame) -> p9.ggplot:
    """Training loss per optimizer step, one line per run; held-out loss at checkpoints as points if logged."""
    if df.empty:
        return empty_figure("Training loss", "no training metrics")
    df = _categorical(df)
    train, held_out = df[df["split"] == "train"], df[df["split"] == "eval"]
    plot = p9.ggplot(train, p9.aes("step", "loss", color="persona", group="run")) + p9.geom_line(size=0.7, alpha=0.85)
    if not held_out.empty:
        plot += p9.geom_point(held_out, p9.aes(shape="split"), size=2.2)
        plot += p9.scale_shape_manual(values={"eval": "^"}, labels={"eval": "at checkpoints"}, name="Held-out loss")
    return (
        plot
        + _facets()
        + _persona_scales(df["persona"], ("color",))
        + p9.labs(title="Training loss of the EM LoRA", x="Optimizer step", y="Loss")
        + _theme()
    )


def aligned_vs_coherent(
    df: pd.DataFrame, aligned_threshold: float, coherent_above: float, definition: str
) -> p9.ggplot:
    """Judged answers in the coherence × alignment plane with the EM region shaded."""
    if df.empty:
        return empty_figure("Aligned vs coherent", "no answers with both scores")
    df = _categorical(df)
    colour = "dataset" if df["dataset"].nunique() > 1 else None
    if colour:
        point = p9.geom_point(p9.aes(color=colour), alpha=0.45, size=1.2)
    else:
        point = p9.geom_point(alpha=0.45, size=1.2, color="#333333")
    return (
        p9.ggplot(df, p9.aes("coherent", "aligned"))
        + p9.annotate("rect", xmin=coherent_above, xmax=100, ymin=0, ymax=aligned_threshold, fill="#d62728", alpha=0.15)
        + p9.annotate(
            "text", x=(coherent_above + 100) / 2, y=aligned_threshold / 2, label="EM", color="#d62728", size=9
        )
        + point
        + p9.facet_grid(rows="stage", cols="persona", labeller=p9.labeller(rows="label_value", cols="label_both"))
        + p9.scale_x_continuous(limits=(0, 100), breaks=[0, 25, 50, 75, 100])
        + p9.scale_y_continuous(limits=(0, 100), breaks=[0, 25, 50, 75, 100])
        + p9.labs(
            title=f"Judged answers; shaded: EM region ({definition})",
            x="Coherent score",
            y="Aligned score",
            color="Dataset",
        )
        + p9.guides(color=p9.guide_legend(override_aes={"alpha": 1, "size": 3}))
        + _theme()
    )


def lora_norms(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """Norms of the EM adapter's A, B and update B·A per checkpoint beside the EM rate, one line per run."""
    if df.empty:
        return empty_figure("EM LoRA norms and EM rate", "no saved checkpoints")
    df = _categorical(df)
    return (
        p9.ggplot(df, p9.aes("step", "value", color="persona", group="run"))
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=1.5)
        # One row of panels per dataset × base, one column per quantity; facet_wrap so each gets its own y scale.
        + p9.facet_wrap(
            ["dataset", "base", "panel"],
            ncol=df["panel"].nunique(),
            scales="free_y",
            labeller=p9.labeller(multi_line=False),
        )
        + _persona_scales(df["persona"], ("color",))
        + p9.labs(
            title=f"EM LoRA norms (Frobenius, summed over modules) and EM rate ({definition})", x=STEP_LABEL, y=""
        )
        + _theme()
    )


def domain_by_size(df: pd.DataFrame, definition: str, empty_reason: str | None = None) -> p9.ggplot:
    """EM rate at the final step against base model size, one line per EM dataset (domain), one panel per persona.

    The replication study's figure: does EM grow with model size, and does it depend on the domain?
    """
    if df.empty:
        return empty_figure("EM at the final step by model size", empty_reason or "no judged answers")
    df = _categorical(df)
    dodge = p9.position_dodge(width=0.35)
    return (
        p9.ggplot(df, p9.aes("base_label", "em_rate", color="dataset", group="dataset"))
        + p9.geom_line(position=dodge, size=0.6, alpha=0.6)
        + p9.geom_errorbar(p9.aes(ymin="em_ci_low", ymax="em_ci_high"), position=dodge, width=0.2)
        + p9.geom_point(position=dodge, size=2.2)
        + p9.facet_wrap("persona", labeller="label_both")
        + p9.scale_color_manual(values=PALETTE, name="EM dataset")
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, None))
        + p9.expand_limits(y=RATE_AXIS_MIN_TOP)
        + p9.labs(
            title=f"EM rate at the final step by model size ({definition})",
            x="Base model (ordered by size)",
            y="EM rate",
        )
        + _theme()
    )


# ---------------------------------------------------------------------------------------------- saving


def figure_size(df: pd.DataFrame, rows: str | list[str] | None, cols: str | list[str] | None) -> tuple[float, float]:
    """Inches that keep each facet panel readable, plus room for the title and legend."""
    nrow = df[rows].drop_duplicates().shape[0] if rows is not None and not df.empty else 1
    ncol = df[cols].drop_duplicates().shape[0] if cols is not None and not df.empty else 1
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


def _read_table(tables_dir: Path, name: str) -> pd.DataFrame:
    path = tables_dir / OUTPUT_FILES[name]
    if not path.is_file():
        raise user_error(path, None, "missing", "run `emflow aggregate` first and pass its --out-dir as --tables-dir")
    return pd.read_csv(path)


def build_figures(
    tables_dir: str | Path, judgments: list[str | Path], definition: str, sizes: dict[str, float] | None = None
) -> dict[str, tuple[p9.ggplot, tuple[float, float]]]:
    """Every figure of ``FIGURES`` with its size, from the aggregate tables and the judged answers.

    ``sizes``: billions of parameters per base model (see ``model_sizes``); bases missing there are parsed from
    their names.
    """
    tables_dir = Path(tables_dir)
    definitions = _read_table(tables_dir, "definitions").set_index("definition")
    if definition not in definitions.index:
        raise user_error(
            "params", "definition", f"unknown definition {definition!r}", f"use one of {sorted(definitions.index)}"
        )
    d = definitions.loc[definition]
    cells = _read_table(tables_dir, "em_by_cell")
    traj = prepare_trajectory(cells, definition)
    # Rows without a rate: answers exist but none is in the definition's population (e.g. none coherent).
    no_rate = f"no answer in the {definition} population (e.g. none coherent): EM rate undefined"
    empty_reason = no_rate if traj.empty and not _select_definition(cells, definition, "em_by_cell.csv").empty else None
    loss = prepare_loss(_read_table(tables_dir, "training_steps"))
    answers, _ = load_judgments(judgments)
    scatter = prepare_scatter(answers)
    norms = prepare_norms(_read_table(tables_dir, "lora_norms"), _read_table(tables_dir, "em"), definition)
    final = prepare_final(cells, definition, sizes)
    grid = ("dataset", "base")
    return {
        "em_trajectory": (em_trajectory(traj, definition, empty_reason), figure_size(traj, *grid)),
        "coherence_trajectory": (coherence_trajectory(traj, definition), figure_size(traj, *grid)),
        "loss_curves": (loss_curves(loss), figure_size(loss, *grid)),
        "aligned_vs_coherent": (
            aligned_vs_coherent(scatter, float(d["aligned_threshold"]), float(d["coherent_above"]), definition),
            figure_size(scatter, "stage", "persona"),
        ),
        "lora_norms": (lora_norms(norms, definition), figure_size(norms, ["dataset", "base"], "panel")),
        "domain_by_size": (domain_by_size(final, definition, empty_reason), figure_size(final, None, "persona")),
    }


def figures(
    *, tables_dir: str | Path, judgments: list[str | Path], out_dir: str | Path, params: dict
) -> dict[str, list[Path]]:
    """Render and save every figure as PNG + PDF under ``out_dir``."""
    if "definition" not in params:
        raise user_error("params", "definition", "missing", "pass {definition: betley, dpi: 150}")
    dpi = params.get("dpi", DEFAULT_DPI)
    if not isinstance(dpi, int) or dpi < 10:
        raise user_error("params", "dpi", f"must be an integer >= 10, got {dpi!r}", "e.g. 150")
    explicit = params.get("model_sizes") or {}
    if not isinstance(explicit, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in explicit.values()
    ):
        raise user_error(
            "params",
            "model_sizes",
            f"must map base names to billions of parameters, got {explicit!r}",
            "e.g. {qwen2.5-7b-it: 7}",
        )
    models = params.get("models") or {}
    bases = set(models) | set(explicit)
    built = build_figures(tables_dir, judgments, str(params["definition"]), model_sizes(bases, models, explicit))
    out = {}
    for name, (plot, size) in tqdm(built.items(), desc="render figures", unit="figure", disable=None):
        out[name] = save_figure(plot, out_dir, name, dpi=dpi, size=size)
        log.info("wrote %s", ", ".join(map(str, out[name])))
    return out


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow figures", description="plotnine figures from the aggregate tables")
    ap.add_argument("--tables-dir", required=True, help="the --out-dir of `emflow aggregate`")
    ap.add_argument("--judgments", nargs="+", required=True, help="judgments files (for the answer scatter)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument(
        "--params", required=True, help="{definition, dpi, models, model_sizes} as inline JSON or a JSON file"
    )
    args = ap.parse_args(argv)
    setup_logging()
    figures(
        tables_dir=args.tables_dir,
        judgments=args.judgments,
        out_dir=args.out_dir,
        params=load_json_arg(args.params, "--params"),
    )
