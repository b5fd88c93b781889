"""The persona proven active: each run's losses of base, base + persona and base + persona + fresh EM LoRA at
training start (persona_effect.csv, from ``summary.json``'s ``persona_effect``, see emflow.train.persona_check),
and the EM rate at step 0 (base + persona, no EM LoRA) of every persona beside the no-persona cell
(persona_step0.csv, from em_by_cell.csv)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from emflow.analysis.tables import CELL_COLS, RUN_COLS, sort_rows
from emflow.errors import user_error
from emflow.layout import parse_run_path

log = logging.getLogger(__name__)

# From summary.json's persona_effect record (emflow.train.persona_check.persona_effect), in this order.
EFFECT_FIELDS = [
    "persona_active",
    "loss_base",
    "loss_persona",
    "loss_stacked",
    "max_change_persona",
    "max_change_stacked",
    "max_change_stacked_vs_persona",
    "rows",
    "tokens",
    "min_change",
]
PERSONA_EFFECT_COLUMNS = RUN_COLS + ["persona_adapter", "persona_mode", *EFFECT_FIELDS, "check_after_resume"]
STEP0_RATES = ["n_seeds", "n_scored", "n_em", "em_rate", "em_ci_low", "em_ci_high"]
NO_PERSONA = "no_persona"  # prefix of the columns of the same base × dataset × variant without persona
PERSONA_STEP0_COLUMNS = (
    CELL_COLS
    + ["definition", "has_persona", *STEP0_RATES]
    + [NO_PERSONA, *(f"{NO_PERSONA}_{c}" for c in ("n_scored", "em_rate", "em_ci_low", "em_ci_high"))]
)


def _read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise user_error(path, None, "missing", "re-run the train stage for this run")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise user_error(path, None, f"not valid JSON ({err.msg})", "re-run the train stage") from err


def effect_row(run_dir: str | Path) -> dict:
    """One run's persona_effect.csv row. A summary written before the persona check existed gives empty
    measurements (logged): its run never proved the persona active."""
    run_dir = Path(run_dir)
    keys = parse_run_path(run_dir)
    keys.pop("step")
    summary = _read_summary(run_dir)
    effect = summary.get("persona_effect")
    if not isinstance(effect, dict):
        log.warning("%s: no persona_effect in summary.json (trained before the persona check)", run_dir)
        effect = {}
    after = summary.get("persona_check_after_resume")
    adapter = summary.get("persona_spec") or summary.get("persona")
    return {
        **keys,
        "persona_adapter": adapter,
        "persona_mode": summary.get("persona_mode") if adapter else None,
        **{k: effect.get(k) for k in EFFECT_FIELDS},
        "check_after_resume": after.get("result") if isinstance(after, dict) else None,
        # whether the run had a persona at all (unknown for a summary without its persona field)
        "_has_persona": (summary["persona"] is not None) if "persona" in summary else None,
    }


def persona_effect_table(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """persona_effect.csv: one row per run."""
    rows = [effect_row(d) for d in run_dirs]
    df = pd.DataFrame(rows, columns=[*PERSONA_EFFECT_COLUMNS, "_has_persona"])
    return sort_rows(df, RUN_COLS)


def persona_step0_table(em_by_cell: pd.DataFrame, effect: pd.DataFrame) -> pd.DataFrame:
    """persona_step0.csv: per cell × definition the step-0 EM rate (base + persona, before any EM training),
    pooled over seeds with em_by_cell.csv's interval, beside the cell of the same base, dataset and variant without
    a persona (``no_persona*``; empty on that cell itself and where the grid has none). Which personas are "no
    persona" comes from the runs' summaries (``persona_effect_table``'s ``_has_persona``)."""
    if em_by_cell.empty or "step" not in em_by_cell:
        return pd.DataFrame(columns=PERSONA_STEP0_COLUMNS)
    has = effect.groupby("persona")["_has_persona"].agg(lambda s: None if s.isna().any() else bool(s.all()))
    step0 = em_by_cell[em_by_cell["step"] == 0].copy()
    step0["has_persona"] = step0["persona"].map(has.to_dict())
    plain = step0[step0["has_persona"] == False]  # noqa: E712 (None stays unknown)
    key = ["base", "dataset", "variant", "definition"]
    beside = plain[key + ["persona", "n_scored", "em_rate", "em_ci_low", "em_ci_high"]].rename(
        columns={
            "persona": NO_PERSONA,
            **{c: f"{NO_PERSONA}_{c}" for c in ("n_scored", "em_rate", "em_ci_low", "em_ci_high")},
        }
    )
    beside = beside.drop_duplicates(key)  # one no-persona cell per base × dataset × variant (the first by name)
    out = step0.merge(beside, on=key, how="left")
    out.loc[out["has_persona"] == False, [c for c in out.columns if c.startswith(NO_PERSONA)]] = None  # noqa: E712
    return sort_rows(out.reindex(columns=PERSONA_STEP0_COLUMNS), CELL_COLS + ["definition"])


def persona_tables(run_dirs: Iterable[str | Path], em_by_cell: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{persona_effect, persona_step0}."""
    effect = persona_effect_table(run_dirs)
    return {
        "persona_effect": effect[PERSONA_EFFECT_COLUMNS],
        "persona_step0": persona_step0_table(em_by_cell, effect),
    }


def step0_examples(examples: pd.DataFrame, step0: pd.DataFrame) -> pd.DataFrame:
    """The step-0 rows of the report's example answers, per question with the no-persona answers first and each
    persona's beside them (``step0``: persona_step0.csv, which says which personas are none)."""
    if examples.empty or "step" not in examples:
        return examples
    df = examples[examples["step"] == 0].copy()
    plain = set(step0.loc[step0["has_persona"] == False, "persona"]) if "has_persona" in step0 else set()  # noqa: E712
    df["_persona_first"] = ~df["persona"].isin(plain)
    keys = ("question_id", "_persona_first", "persona", "base", "dataset", "variant", "seed")
    order = [c for c in keys if c in df.columns]
    return df.sort_values(order, kind="stable").drop(columns="_persona_first").reset_index(drop=True)
