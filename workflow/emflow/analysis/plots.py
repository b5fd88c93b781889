"""plotnine figures: one function per figure, a tidy frame in (``figure_data``), a ggplot out; an empty frame
gives a placeholder that says why, so every figure file always exists."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import plotnine as p9
from mizani.labels import label_percent

STEP_LABEL = "Training step (0 = persona only, before EM training)"
NO_PERSONA = "none"
# Grey for the no-persona baseline, then colour-blind-safe Okabe-Ito hues for personas.
BASELINE_COLOUR = "#7f7f7f"
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
RATE_AXIS_MIN_TOP = 0.1  # rate axes reach at least 10 %: all-zero rates otherwise get an axis from -50 % to 50 %


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


def em_by_seed(runs: pd.DataFrame, pooled: pd.DataFrame, definition: str) -> p9.ggplot:
    """EM rate vs step: each run (seed) a thin line, the estimate pooled over seeds bold, per persona."""
    if runs.empty:
        return empty_figure("EM rate per seed", "no judged answers")
    personas = pd.concat([runs["persona"], pooled["persona"]]) if not pooled.empty else runs["persona"]
    runs = _categorical(runs).assign(persona=lambda d: d["persona"].cat.set_categories(_persona_order(personas)))
    plot = p9.ggplot(runs, p9.aes("step", "em_rate", color="persona")) + p9.geom_line(
        p9.aes(group="run"), size=0.4, alpha=0.55
    )
    if not pooled.empty:
        pooled = _categorical(pooled).assign(
            persona=lambda d: d["persona"].cat.set_categories(_persona_order(personas))
        )
        plot += p9.geom_line(pooled, size=1.6)
        plot += p9.geom_point(pooled, size=2.0)
    return (
        plot
        + _facets()
        + _persona_scales(personas, ("color",))
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, None))
        + p9.expand_limits(y=RATE_AXIS_MIN_TOP)
        + p9.labs(
            title=f"EM rate per seed (thin) and pooled over seeds (bold), {definition} definition",
            x=STEP_LABEL,
            y="EM rate",
        )
        + _theme()
    )


def em_by_question(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """EM rate per question and persona at each cell's final step, with bootstrap intervals over seeds and answers."""
    if df.empty:
        return empty_figure("EM rate per question at the final step", "no judged answers")
    df = _categorical(df)
    dodge = p9.position_dodge(width=0.6)
    return (
        p9.ggplot(df, p9.aes("question_id", "em_rate", color="persona"))
        + p9.geom_errorbar(p9.aes(ymin="em_ci_low", ymax="em_ci_high"), position=dodge, width=0.4)
        + p9.geom_point(position=dodge, size=2.0)
        + p9.coord_flip()
        + _facets()
        + _persona_scales(df["persona"], ("color",))
        + p9.scale_x_discrete(limits=list(reversed(df["question_id"].cat.categories)))
        + p9.scale_y_continuous(labels=label_percent(), limits=(0, 1))
        + p9.labs(title=f"EM rate per question at the final step ({definition})", x="Question", y="EM rate")
        + _theme()
    )


def response_examples(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """One answer per persona (rows) at step 0 and at the final step (columns, per question), wrapped, with its
    scores: a table drawn as a figure."""
    if df.empty:
        return empty_figure("Example responses", "no judged answers")
    df = df.copy()
    rows = df["row"].unique()
    by_persona = dict(zip(df["row"], df["persona"], strict=True))
    rank = {p: i for i, p in enumerate(_persona_order(df["persona"]))}
    # base · dataset first, then the personas in the figures' order (no persona first)
    rows = sorted(rows, key=lambda r: (r.rsplit("\n", 1)[0] if "\n" in r else "", rank[by_persona[r]]))
    df["row"] = pd.Categorical(df["row"], categories=rows)
    return (
        p9.ggplot(df, p9.aes(x=0, y=1, label="label"))
        + p9.geom_text(ha="left", va="top", size=7, lineheight=1.15)
        + p9.facet_grid(rows="row", cols="column")
        + p9.scale_x_continuous(limits=(0, 1), expand=(0, 0.02))
        + p9.scale_y_continuous(limits=(0, 1), expand=(0, 0.03))
        + p9.labs(title=f"Example responses (one answer per persona and stage; EM by the {definition} definition)")
        + p9.theme_bw(base_size=9)
        + p9.theme(
            axis_text=p9.element_blank(),
            axis_ticks=p9.element_blank(),
            axis_title=p9.element_blank(),
            panel_grid=p9.element_blank(),
            strip_background=p9.element_rect(fill="#eeeeee"),
            strip_text_y=p9.element_text(angle=0),
            plot_title=p9.element_text(size=11),
        )
    )
