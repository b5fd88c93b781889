"""The tidy frames the figures draw, prepared from the aggregate tables and the judged answers, and the base
models' sizes the size figure orders by."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emflow.analysis.definitions import EMDefinition
from emflow.analysis.tables import CELL_COLS, RUN_COLS
from emflow.errors import user_error
from emflow.io import stable_hash

NORM_PANELS = {"norm_A": "‖A‖", "norm_B": "‖B‖", "norm_BA": "‖B·A‖"}  # Frobenius, summed over modules
EM_PANEL = "EM rate"
# response_examples: characters per line of a wrapped answer (a panel ~3.4 in wide at 7 pt) and lines kept.
EXAMPLE_WRAP = 56
EXAMPLE_ANSWER_LINES = 14
STAGES = ("step 0 (persona only)", "final step")
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


def prepare_by_seed(em: pd.DataFrame, em_by_cell: pd.DataFrame, definition: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-run rows of em.csv, pooled rows of em_by_cell.csv) of one definition with a rate; the runs carry a
    ``run`` key (persona / seed) that draws one line each."""
    runs = select_definition(em, definition, "em.csv").dropna(subset=["em_rate"]).copy()
    runs["run"] = runs["persona"].astype(str) + " / seed " + runs["seed"].astype(str)
    return runs.reset_index(drop=True), prepare_trajectory(em_by_cell, definition)


def prepare_by_question(per_question: pd.DataFrame, definition: str) -> pd.DataFrame:
    """per_question.csv rows of one definition at each cell's final step, with a rate present."""
    df = select_definition(per_question, definition, "per_question.csv")
    if df.empty:
        return df.reset_index(drop=True)
    final = df.groupby(CELL_COLS)["step"].transform("max")
    df = df[df["step"] == final].dropna(subset=["em_rate"]).copy()
    df["question_id"] = pd.Categorical(
        df["question_id"].astype(str), categories=sorted(set(df["question_id"].astype(str)))
    )
    return df.reset_index(drop=True)


def default_example_question(per_question: pd.DataFrame, definition: str) -> list[str]:
    """The question whose EM rate, pooled over cells, rises most from step 0 to each cell's final step (ties by
    id); [] when no question was answered."""
    df = select_definition(per_question, definition, "per_question.csv")
    if df.empty:
        return []
    final = df.groupby(CELL_COLS)["step"].transform("max")
    rise = {}
    for qid, g in df.groupby("question_id", sort=True):
        at_end, at_start = g[g["step"] == final.loc[g.index]], g[g["step"] == 0]
        end = at_end["n_em"].sum() / at_end["n_scored"].sum() if at_end["n_scored"].sum() else math.nan
        start = at_start["n_em"].sum() / at_start["n_scored"].sum() if at_start["n_scored"].sum() else 0.0
        rise[str(qid)] = -math.inf if math.isnan(end) else end - start
    return [min(rise, key=lambda q: (-rise[q], q))]


def _plain(value: Any) -> str | None:
    """A value as text, whole floats as integers (an index column read as float with NaN elsewhere)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _pick_key(seed: int, row: Any) -> str:
    """A uniform, reproducible order over answers: the hash of the pick's seed and the answer's identity (run,
    step, question, paraphrase, sample), so the choice does not depend on file or row order."""
    ident = [getattr(row, k, None) for k in (*RUN_COLS, "step", "question_id", "paraphrase_index", "sample_index")]
    return stable_hash([seed, [_plain(v) for v in ident]])


def _wrap(text: str, width: int, lines: int | None = None) -> str:
    """``text`` wrapped to ``width`` columns (paragraphs kept), cut to ``lines`` with an ellipsis; ``$`` escaped,
    so matplotlib never reads an answer as mathtext."""
    out: list[str] = []
    for para in str(text).splitlines() or [""]:
        out += textwrap.wrap(para, width=width, break_long_words=True, replace_whitespace=True) or [""]
    while out and not out[-1]:
        out.pop()
    if lines is not None and len(out) > lines:
        out = out[: lines - 1] + [textwrap.shorten(out[lines - 1], width=width - 2, placeholder="") + " …"]
    return "\n".join(out).replace("$", r"\$") or "(empty answer)"


def _score(value: float) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.0f}"


def prepare_examples(
    answers: pd.DataFrame,
    per_question: pd.DataFrame,
    d: EMDefinition,
    questions: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """One answer per question × (base, dataset, persona) × stage (step 0, each run's final step) with its scores.

    ``questions``: ids to show (config ``analysis.figures.example_questions``); empty: ``default_example_question``.
    Among the stage's answers of every seed, paraphrase and sample the one with the smallest ``_pick_key`` is shown.
    """
    columns = ["question_id", "persona", "row", "stage", "column", "label", "step", "seed"]
    known = sorted(set(answers["question_id"].astype(str))) if not answers.empty else []
    chosen = [str(q) for q in questions] or default_example_question(per_question, d.name)
    unknown = [q for q in chosen if q not in known]
    if unknown:
        raise user_error(
            "params", "example_questions", f"no judged answers to {unknown}", f"use question ids among {known}"
        )
    if not chosen:
        return pd.DataFrame(columns=columns)
    df = answers[answers["question_id"].astype(str).isin(chosen)].copy()
    final = df.groupby(RUN_COLS)["step"].transform("max")
    df["stage"] = np.where(df["step"] == 0, STAGES[0], np.where(df["step"] == final, STAGES[1], ""))
    df = df[df["stage"] != ""]
    df["key"] = [_pick_key(seed, r) for r in df.itertuples(index=False)]
    group = ["question_id", *CELL_COLS, "stage"]
    picked = df.sort_values("key", kind="stable").groupby(group, sort=True).head(1)
    counted, em = d.masks(picked["aligned"].to_numpy(float), picked["coherent"].to_numpy(float))
    one_cell = picked[["base", "dataset"]].drop_duplicates().shape[0] == 1
    rows = []
    for r, c, e in zip(picked.itertuples(index=False), counted, em, strict=True):
        verdict = "yes" if e else ("no" if c else "not counted")
        answer = getattr(r, "answer", "")
        answer = "" if answer is None or (isinstance(answer, float) and math.isnan(answer)) else str(answer)
        prompt = getattr(r, "question", None)
        lines = [_wrap(f"Q: {prompt}", EXAMPLE_WRAP, 3)] if isinstance(prompt, str) and prompt else []
        lines += [
            _wrap(answer, EXAMPLE_WRAP, EXAMPLE_ANSWER_LINES),
            "",
            f"aligned {_score(r.aligned)} · coherent {_score(r.coherent)} · EM ({d.name}): {verdict}",
            f"seed {r.seed}, step {r.step}, paraphrase {_plain(getattr(r, 'paraphrase_index', None)) or '—'}, "
            f"sample {_plain(getattr(r, 'sample_index', None)) or '—'}",
        ]
        row_label = str(r.persona) if one_cell else f"{r.base}\n{r.dataset}\n{r.persona}"
        rows.append(
            {
                "question_id": str(r.question_id),
                "persona": str(r.persona),
                "row": row_label,
                "stage": r.stage,
                "column": f"{r.question_id}: {r.stage}",
                "label": "\n".join(lines),
                "step": int(r.step),
                "seed": int(r.seed),
            }
        )
    out = pd.DataFrame(rows)
    out["column"] = pd.Categorical(out["column"], categories=[f"{q}: {s}" for q in chosen for s in STAGES])
    return out.sort_values(["column", "row"], kind="stable").reset_index(drop=True)


def question_figure_size(df: pd.DataFrame) -> tuple[float, float]:
    """Inches for em_by_question: panels tall enough for every question × persona row of dodged intervals."""
    if df.empty:
        return (6.5, 3.5)
    n_cols, n_rows = df["base"].nunique(), df["dataset"].nunique()
    per_panel = 0.8 + 0.16 * df["question_id"].nunique() * max(df["persona"].nunique(), 1)
    return (max(6.5, 3.0 + 3.4 * n_cols), max(3.5, 1.2 + per_panel * n_rows))


def examples_figure_size(df: pd.DataFrame) -> tuple[float, float]:
    """Inches for response_examples: ~3.6 in per column of wrapped text, each row as tall as its longest label."""
    if df.empty:
        return (6.5, 3.0)
    n_lines = df["label"].str.count("\n") + 1
    row_lines = n_lines.groupby(df["row"].astype(str)).max()
    return (1.6 + 3.6 * df["column"].nunique(), 1.0 + float((0.35 + 0.135 * row_lines).sum()))
