"""plotnine figures: one function per figure (tidy DataFrame in, ggplot out); saving is separate.

``prepare_*`` functions turn the aggregate tables into the tidy frames the figure functions take.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
import plotnine as p9
from mizani.labels import label_percent
from tqdm import tqdm

from emflow.aggregate import OUTPUT_FILES, RUN_KEYS, load_json_arg, load_judgments, setup_logging
from emflow.errors import user_error

log = logging.getLogger(__name__)

FIGURES = [
    "em_trajectory", "coherence_trajectory", "loss_curves", "aligned_vs_coherent", "lora_norms", "domain_by_size",
]  # fmt: skip
STEP_LABEL = "Training step (0 = persona only, before EM training)"
NO_PERSONA = "none"
DEFAULT_DPI = 150  # used only when config analysis.figures.dpi is absent
# Grey for the no-persona baseline, then colour-blind-safe Okabe-Ito hues for personas.
BASELINE_COLOUR = "#7f7f7f"
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
NORM_PANEL = "‖B·A‖ (sum over modules)"
EM_PANEL = "EM rate"


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


def _facets(df: pd.DataFrame, rows: str = "dataset", cols: str = "base", scales: str = "fixed") -> p9.facet_grid:
    return p9.facet_grid(rows=rows, cols=cols, labeller="label_both", scales=scales)


def empty_figure(title: str, reason: str) -> p9.ggplot:
    """Placeholder so the figure file always exists (e.g. a study without saved checkpoints)."""
    return (
        p9.ggplot()
        + p9.annotate("text", x=0, y=0, label=reason, size=11)
        + p9.labs(title=title)
        + p9.theme_void()
        + p9.theme(figure_size=(6, 3))
    )


# ------------------------------------------------------------------------------------------- preparing


def _select_definition(df: pd.DataFrame, definition: str, table: str) -> pd.DataFrame:
    if not df.empty and definition not in set(df["definition"]):
        raise user_error(table, "definition", f"no rows for definition {definition!r}",
                         f"use one of {sorted(set(df['definition']))}")  # fmt: skip
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
    """Long frame: one row per run × step × panel (B·A norm or EM rate)."""
    em = _select_definition(em, definition, "em.csv")
    keys = RUN_KEYS + ["step"]
    norm = lora_norms[keys].assign(panel=NORM_PANEL, value=lora_norms["norm_BA"])
    runs = lora_norms[RUN_KEYS].drop_duplicates()
    rate = em.merge(runs, on=RUN_KEYS)[keys + ["em_rate"]].rename(columns={"em_rate": "value"}).assign(panel=EM_PANEL)
    df = pd.concat([norm, rate], ignore_index=True).dropna(subset=["value"])
    df["panel"] = pd.Categorical(df["panel"], categories=[NORM_PANEL, EM_PANEL])
    df["run"] = df["persona"].astype(str) + " / seed " + df["seed"].astype(str)
    return df


def prepare_final(em_by_cell: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Each cell's row at its final step."""
    df = prepare_trajectory(em_by_cell, definition)
    if df.empty:
        return df
    final = df.groupby(["base", "persona", "dataset"])["step"].transform("max")
    return df[df["step"] == final].reset_index(drop=True)


# --------------------------------------------------------------------------------------------- figures


def _rate_trajectory(df: pd.DataFrame, y: str, lo: str, hi: str, title: str, ylab: str) -> p9.ggplot:
    df = _categorical(df)
    return (
        p9.ggplot(df, p9.aes("step", y, color="persona", fill="persona"))
        + p9.geom_ribbon(p9.aes(ymin=lo, ymax=hi), alpha=0.15, color="none")
        + p9.geom_line(size=0.8)
        + p9.geom_point(size=1.8)
        + _facets(df)
        + _persona_scales(df["persona"])
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, None))
        + p9.labs(title=title, x=STEP_LABEL, y=ylab)
        + _theme()
    )


def em_trajectory(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """EM rate vs step per persona, pooled over seeds, with bootstrap CI ribbons."""
    if df.empty:
        return empty_figure("EM rate over training", "no judged answers")
    return _rate_trajectory(df, "em_rate", "em_ci_low", "em_ci_high",
                            f"EM rate over training ({definition} definition)", "EM rate")  # fmt: skip


def coherence_trajectory(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """Share of coherent answers vs step per persona."""
    if df.empty:
        return empty_figure("Coherent answers over training", "no judged answers")
    return _rate_trajectory(df, "coherent_rate", "coherent_ci_low", "coherent_ci_high",
                            f"Coherent answers over training ({definition})", "Coherent answers")  # fmt: skip


def loss_curves(df: pd.DataFrame) -> p9.ggplot:
    """Training loss per optimizer step, one line per run; held-out loss at checkpoints as points if logged."""
    if df.empty:
        return empty_figure("Training loss", "no training metrics")
    df = _categorical(df)
    train, held_out = df[df["split"] == "train"], df[df["split"] == "eval"]
    plot = (
        p9.ggplot(train, p9.aes("step", "loss", color="persona", group="run"))
        + p9.geom_line(size=0.7, alpha=0.85)
    )
    if not held_out.empty:
        plot += p9.geom_point(held_out, p9.aes(shape="split"), size=2.2)
        plot += p9.scale_shape_manual(values={"eval": "^"}, labels={"eval": "at checkpoints"}, name="Held-out loss")
    return (
        plot
        + _facets(df)
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
        + p9.annotate("text", x=(coherent_above + 100) / 2, y=aligned_threshold / 2, label="EM", color="#d62728",
                      size=9)  # fmt: skip
        + point
        + p9.facet_grid(rows="stage", cols="persona", labeller=p9.labeller(rows="label_value", cols="label_both"))
        + p9.scale_x_continuous(limits=(0, 100), breaks=[0, 25, 50, 75, 100])
        + p9.scale_y_continuous(limits=(0, 100), breaks=[0, 25, 50, 75, 100])
        + p9.labs(title=f"Judged answers; shaded: EM region ({definition})", x="Coherent score", y="Aligned score",
                  color="Dataset")  # fmt: skip
        + p9.guides(color=p9.guide_legend(override_aes={"alpha": 1, "size": 3}))
        + _theme()
    )


def lora_norms(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """Norm of the EM adapter's update B·A per checkpoint beside the EM rate, one line per run."""
    if df.empty:
        return empty_figure("EM LoRA norm and EM rate", "no saved checkpoints")
    df = _categorical(df)
    return (
        p9.ggplot(df, p9.aes("step", "value", color="persona", group="run"))
        + p9.geom_line(size=0.7)
        + p9.geom_point(size=1.5)
        + p9.facet_grid(rows="panel", cols=["dataset", "base"], scales="free_y",
                        labeller=p9.labeller(rows="label_value", cols="label_both"))
        + _persona_scales(df["persona"], ("color",))
        + p9.labs(title=f"EM LoRA update norm and EM rate ({definition})", x=STEP_LABEL, y="")
        + _theme()
    )


def domain_by_size(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """EM rate at the final step per dataset and persona, one panel per base model."""
    if df.empty:
        return empty_figure("EM at the final step", "no judged answers")
    df = _categorical(df)
    dodge = p9.position_dodge(width=0.8)
    return (
        p9.ggplot(df, p9.aes("dataset", "em_rate", fill="persona"))
        + p9.geom_col(position=dodge, width=0.75)
        + p9.geom_errorbar(p9.aes(ymin="em_ci_low", ymax="em_ci_high"), position=dodge, width=0.25)
        + p9.facet_wrap("base", labeller="label_both")
        + _persona_scales(df["persona"], ("fill",))
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, None))
        + p9.labs(title=f"EM rate at the final step ({definition})", x="EM dataset", y="EM rate")
        + _theme()
    )


# ---------------------------------------------------------------------------------------------- saving


def figure_size(df: pd.DataFrame, rows: str | None, cols: str | list[str] | None) -> tuple[float, float]:
    """Inches that keep each facet panel readable, plus room for the title and legend."""
    nrow = df[rows].nunique() if rows and not df.empty else 1
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
            plot.save(tmp, dpi=dpi, width=size[0], height=size[1], units="in", verbose=False)
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
    tables_dir: str | Path, judgments: list[str | Path], definition: str
) -> dict[str, tuple[p9.ggplot, tuple[float, float]]]:
    """Every figure of ``FIGURES`` with its size, from the aggregate tables and the judged answers."""
    tables_dir = Path(tables_dir)
    definitions = _read_table(tables_dir, "definitions").set_index("definition")
    if definition not in definitions.index:
        raise user_error("params", "definition", f"unknown definition {definition!r}",
                         f"use one of {sorted(definitions.index)}")  # fmt: skip
    d = definitions.loc[definition]
    cells = _read_table(tables_dir, "em_by_cell")
    traj = prepare_trajectory(cells, definition)
    loss = prepare_loss(_read_table(tables_dir, "training_steps"))
    answers, _ = load_judgments(judgments)
    scatter = prepare_scatter(answers)
    norms = prepare_norms(_read_table(tables_dir, "lora_norms"), _read_table(tables_dir, "em"), definition)
    final = prepare_final(cells, definition)
    grid = ("dataset", "base")
    return {
        "em_trajectory": (em_trajectory(traj, definition), figure_size(traj, *grid)),
        "coherence_trajectory": (coherence_trajectory(traj, definition), figure_size(traj, *grid)),
        "loss_curves": (loss_curves(loss), figure_size(loss, *grid)),
        "aligned_vs_coherent": (
            aligned_vs_coherent(scatter, float(d["aligned_threshold"]), float(d["coherent_above"]), definition),
            figure_size(scatter, "stage", "persona"),
        ),
        "lora_norms": (lora_norms(norms, definition), figure_size(norms, "panel", ["dataset", "base"])),
        "domain_by_size": (domain_by_size(final, definition), figure_size(final, None, "base")),
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
    built = build_figures(tables_dir, judgments, str(params["definition"]))
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
    ap.add_argument("--params", required=True, help="{definition, dpi} as inline JSON or a JSON file")
    args = ap.parse_args(argv)
    setup_logging()
    figures(tables_dir=args.tables_dir, judgments=args.judgments, out_dir=args.out_dir,
            params=load_json_arg(args.params, "--params"))  # fmt: skip
