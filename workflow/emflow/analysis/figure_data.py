"""The tidy frames the figures draw, prepared from the aggregate tables and the judged answers, and the base
models' sizes the size figure orders by."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from emflow.analysis.tables import RUN_COLS
from emflow.errors import user_error

NORM_PANELS = {"norm_A": "‖A‖", "norm_B": "‖B‖", "norm_BA": "‖B·A‖"}  # Frobenius, summed over modules
EM_PANEL = "EM rate"
# "7b", "0.5B", "135m" in a base model's name or hub id: the parameter count the size figure orders by.
SIZE_RE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)\s*([bBmM])(?![A-Za-z0-9])")


def select_definition(df: pd.DataFrame, definition: str, table: str) -> pd.DataFrame:
    """The rows of one definition; a table without any is a one-line error."""
    if not df.empty and definition not in set(df["definition"]):
        raise user_error(
            table, "definition", f"no rows for definition {definition!r}", f"use one of {sorted(set(df['definition']))}"
        )
    return df[df["definition"] == definition]


def prepare_trajectory(em_by_cell: pd.DataFrame, definition: str) -> pd.DataFrame:
    """em_by_cell rows of one definition with a rate present."""
    df = select_definition(em_by_cell, definition, "em_by_cell.csv")
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
    final = df.groupby(RUN_COLS)["step"].transform("max")
    df = df[(df["step"] == 0) | (df["step"] == final)].copy()
    df["stage"] = pd.Categorical(
        ["step 0 (persona only)" if s == 0 else "final step" for s in df["step"]],
        categories=["step 0 (persona only)", "final step"],
    )
    return df


def prepare_norms(lora_norms: pd.DataFrame, em: pd.DataFrame, definition: str) -> pd.DataFrame:
    """Long frame: one row per run × step × panel (‖A‖, ‖B‖, ‖B·A‖, EM rate)."""
    em = select_definition(em, definition, "em.csv")
    keys = RUN_COLS + ["step"]
    parts = [lora_norms[keys].assign(panel=label, value=lora_norms[col]) for col, label in NORM_PANELS.items()]
    runs = lora_norms[RUN_COLS].drop_duplicates()
    rate = em.merge(runs, on=RUN_COLS)[keys + ["em_rate"]].rename(columns={"em_rate": "value"}).assign(panel=EM_PANEL)
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
        [_size_label(str(b), v) for b, v in zip(df["base"], df["size_b"], strict=True)], categories=labels
    )
    return df
