"""Example answers for the report: the first few per question × persona × step, with scores and EM verdict."""

from __future__ import annotations

import html

import pandas as pd

from emflow.analysis.definitions import EMDefinition

EXAMPLE_COLUMNS = [
    "question_id", "persona", "dataset", "base", "variant", "step", "seed", "aligned", "coherent", "em", "answer"
]  # fmt: skip


def example_answers(
    answers: pd.DataFrame, definitions: pd.DataFrame, definition: str, per_cell: int, answer_chars: int
) -> pd.DataFrame:
    """First ``per_cell`` answers per question × persona × step (and base × dataset × variant), by seed and sample;
    ``definitions`` is definitions.csv, whose ``definition`` row judges EM."""
    if answers.empty or per_cell <= 0:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    d = EMDefinition.from_row(definitions[definitions["definition"] == definition].iloc[0])
    order = [c for c in ("seed", "paraphrase_index", "sample_index") if c in answers.columns]
    cell = ["question_id", "persona", "step", "dataset", "base"] + (["variant"] if "variant" in answers else [])
    df = answers.sort_values(cell + order, kind="stable").groupby(cell, sort=True).head(per_cell).copy()
    counted, em = d.masks(df["aligned"].to_numpy(float), df["coherent"].to_numpy(float))
    df["em"] = ["yes" if e else ("no" if c else "not counted") for c, e in zip(counted, em, strict=True)]
    text = df["answer"].fillna("").astype(str) if "answer" in df else pd.Series("", index=df.index)
    df["answer"] = [t if len(t) <= answer_chars else t[:answer_chars] + "…" for t in text]
    return df[[c for c in EXAMPLE_COLUMNS if c in df.columns]].reset_index(drop=True)


def examples_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(no answers)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, val in zip(df.columns, rec, strict=True):
            shown = "—" if pd.isna(val) else (f"{val:.1f}" if isinstance(val, float) else str(val))
            cls = ' class="answer"' if col == "answer" else ""
            cells.append(f"<td{cls}>{html.escape(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
