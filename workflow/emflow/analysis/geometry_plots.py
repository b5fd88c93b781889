"""The adapter-geometry figures (emflow.analysis.geometry's tables): the adapter's rotation beside the EM rate on one
step axis per run (``adapter_rotation``), and its PCA path coloured by the EM rate (``adapter_pca``)."""

from __future__ import annotations

import pandas as pd
import plotnine as p9
from mizani.labels import label_percent

from emflow.analysis.figure_data import select_definition
from emflow.analysis.plots import _categorical, _persona_scales, _theme, empty_figure
from emflow.analysis.tables import RUN_COLS

EM_PANEL = "EM rate"
ROTATION_PANEL = "Rotation (° per step)"
STEP_AXIS = "Training step"
NO_ADAPTERS = "no saved EM adapters"
# The PCA figure has one panel per run (each run has its own components): at most this many side by side.
PCA_COLUMNS = 4


def pca_grid(df: pd.DataFrame) -> tuple[int, int]:
    """(rows, columns) of the PCA figure's panels."""
    n = max(1, df["run"].nunique()) if not df.empty else 1
    cols = min(n, PCA_COLUMNS)
    return -(-n // cols), cols


def _run_label(df: pd.DataFrame) -> pd.Series:
    return (
        df["base"].astype(str)
        + " / "
        + df["dataset"].astype(str)
        + "\n"
        + df["persona"].astype(str)
        + " · seed "
        + df["seed"].astype(str)
    )


def _with_run(df: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    df = df.assign(run=_run_label(df))
    df["run"] = pd.Categorical(df["run"], categories=runs)
    return df


def _runs(trajectory: pd.DataFrame) -> list[str]:
    keys = trajectory[RUN_COLS].drop_duplicates().sort_values(RUN_COLS)
    return list(dict.fromkeys(_run_label(keys)))


def prepare_rotation(trajectory: pd.DataFrame, em: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Long frame: one row per run × step × panel (the EM rate at the evaluated steps, the rotation per optimizer
    step at every saved step), and ``largest`` marking each run's step of largest rotation."""
    if trajectory.empty:
        return pd.DataFrame(columns=[*RUN_COLS, "step", "panel", "value", "run", "largest"])
    em = select_definition(em, definition, "em.csv").merge(trajectory[RUN_COLS].drop_duplicates(), on=RUN_COLS)
    rotation = trajectory[[*RUN_COLS, "step", "rotation_deg_per_step"]].rename(
        columns={"rotation_deg_per_step": "value"}
    )
    largest = rotation.loc[rotation.dropna(subset=["value"]).groupby(RUN_COLS)["value"].idxmax(), [*RUN_COLS, "step"]]
    rate = em[[*RUN_COLS, "step", "em_rate"]].rename(columns={"em_rate": "value"}).assign(panel=EM_PANEL)
    df = pd.concat([rate, rotation.assign(panel=ROTATION_PANEL)], ignore_index=True).dropna(subset=["value"])
    df["panel"] = pd.Categorical(df["panel"], categories=[EM_PANEL, ROTATION_PANEL])
    df = df.merge(largest.assign(largest=True), on=[*RUN_COLS, "step"], how="left")
    df["largest"] = df["largest"].astype("boolean").fillna(False).astype(bool)
    return _with_run(df, _runs(trajectory))


def adapter_rotation(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """EM rate and the adapter's rotation against the step, one line per run (coloured by persona) in a panel per
    base × dataset, so the figure's size does not grow with personas or seeds; a dashed line at each run's step of
    largest rotation."""
    title = f"EM rate ({definition}) and EM-adapter rotation"  # rotation: mean angle since the last save, per step
    if df.empty:
        return empty_figure(title, NO_ADAPTERS)
    df = _categorical(df)
    marks = df[df["largest"]][["base", "dataset", "persona", "run", "step"]].drop_duplicates()
    # in both panels (a layer that lacks one of several facet variables is not broadcast reliably)
    marks = marks.merge(pd.DataFrame({"panel": df["panel"].cat.categories}), how="cross")
    marks["panel"] = pd.Categorical(marks["panel"], categories=df["panel"].cat.categories)
    lines = df[df.groupby(["run", "panel"], observed=True)["step"].transform("size") > 1]  # a line needs two points
    return (
        p9.ggplot(df, p9.aes("step", "value", color="persona"))
        + p9.geom_vline(marks, p9.aes(xintercept="step", color="persona"), linetype="dashed", size=0.4, alpha=0.7)
        + p9.geom_line(lines, p9.aes(group="run"), size=0.7)
        + p9.geom_point(size=1.6)
        + p9.facet_grid(rows=["dataset", "panel"], cols="base", scales="free_y")
        + _persona_scales(df["persona"], ("color",))
        + p9.labs(title=title, x=STEP_AXIS, y="")
        + _theme()
    )


def prepare_pca(trajectory: pd.DataFrame, em: pd.DataFrame, definition: str) -> pd.DataFrame:
    """The trajectory's PCA coordinates with the EM rate at the evaluated steps (NaN elsewhere), runs labelled with
    their components' shares of variance."""
    if trajectory.empty:
        return pd.DataFrame(columns=[*RUN_COLS, "step", "pc1", "pc2", "em_rate", "evaluated", "run"])
    em = select_definition(em, definition, "em.csv")[[*RUN_COLS, "step", "em_rate"]]
    df = trajectory.merge(em, on=[*RUN_COLS, "step"], how="left").sort_values([*RUN_COLS, "step"])
    share = (
        "\nPC1 "
        + (100 * df["pc1_explained"]).round(0).astype("Int64").astype(str)
        + " %, PC2 "
        + (100 * df["pc2_explained"]).round(0).astype("Int64").astype(str)
        + " %"
    )
    labels = _run_label(df) + share
    df = df.assign(run=pd.Categorical(labels, categories=list(dict.fromkeys(labels))))
    df["evaluated"] = df["evaluated"].astype(bool)
    return df.reset_index(drop=True)


def adapter_pca(df: pd.DataFrame, definition: str) -> p9.ggplot:
    """Each run's saved adapters on their first two principal components, joined in step order; evaluated steps
    coloured by EM rate and labelled with their step, geometry-only steps small and grey (the first one labelled:
    where the path starts)."""
    title = f"EM-adapter path (PCA), coloured by EM rate ({definition})"
    if df.empty:
        return empty_figure(title, NO_ADAPTERS)
    evaluated = df[df["evaluated"] & df["em_rate"].notna()]
    first = df[
        (df["step"] == df.groupby("run", observed=True)["step"].transform("min")) & ~df.index.isin(evaluated.index)
    ]
    paths = df[df.groupby("run", observed=True)["step"].transform("size") > 1]  # a path needs two saved steps
    top = max(float(evaluated["em_rate"].max()) if not evaluated.empty else 0.0, 0.1)
    return (
        p9.ggplot(df, p9.aes("pc1", "pc2"))
        + p9.geom_path(paths, p9.aes(group="run"), color="#999999", size=0.6)
        + p9.geom_point(df[~df["evaluated"] | df["em_rate"].isna()], color="#999999", size=1.2)
        + p9.geom_point(evaluated, p9.aes(color="em_rate"), size=3)
        + p9.geom_text(evaluated, p9.aes(label="step"), size=7, va="bottom", ha="left")
        + p9.geom_text(first, p9.aes(label="step"), size=7, va="bottom", ha="left", color="#777777")
        + p9.facet_wrap("run", scales="free", ncol=PCA_COLUMNS)
        + p9.scale_color_cmap("viridis", name="EM rate", labels=label_percent(), limits=(0, top))
        + p9.labs(title=title, x="PC1", y="PC2")
        + _theme()
    )
