"""Training summaries and logged steps of every run folder (training.csv, training_steps.csv), and the LoRA norms
of its checkpoints (lora_norms.csv)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from emflow.analysis.norms import NORM_COLUMNS, run_norms
from emflow.analysis.tables import RUN_COLS, front, sort_rows
from emflow.errors import user_error
from emflow.io import read_jsonl
from emflow.layout import parse_run_path

TRAINING_COLUMNS = RUN_COLS + [
    "final_loss",
    "final_token_accuracy",
    "runtime_s",
    "steps",
    "num_tokens",
    "tokens_per_s",
    "trainable_params",
]
STEP_COLUMNS = RUN_COLS + [
    "split",
    "step",
    "epoch",
    "loss",
    "token_accuracy",
    "learning_rate",
    "grad_norm",
    "num_tokens",
]


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _summary(run_dir: Path, keys: dict) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise user_error(path, None, "missing", "re-run the train stage for this run")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise user_error(path, None, f"not valid JSON ({err.msg})", "re-run the train stage") from err
    return {**keys, **{k: v for k, v in summary.items() if _scalar(v) and k not in keys}}


def _steps(run_dir: Path, keys: dict) -> list[dict]:
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise user_error(metrics_path, None, "missing", "re-run the train stage for this run")
    eval_path = run_dir / "eval_metrics.jsonl"  # written only when the run had an eval split
    rows = []
    for split, path in (("train", metrics_path), ("eval", eval_path)):
        if path.is_file():
            for r in read_jsonl(path):
                values = {k: v for k, v in r.items() if _scalar(v) and k not in keys}
                rows.append({**keys, "split": split, **values})
    return rows


def training_tables(run_dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training, training_steps, lora_norms) from run folders; training_steps holds train and eval rows."""
    summaries, steps, norms = [], [], []
    for run_dir in tqdm(list(run_dirs), desc="read runs", unit="run", disable=None):
        run_dir = Path(run_dir)
        keys = parse_run_path(run_dir)
        keys.pop("step")
        summaries.append(_summary(run_dir, keys))
        steps += _steps(run_dir, keys)
        norms += run_norms(run_dir, keys)
    return (
        sort_rows(front(pd.DataFrame(summaries), TRAINING_COLUMNS), RUN_COLS),
        sort_rows(front(pd.DataFrame(steps), STEP_COLUMNS), RUN_COLS + ["split", "step"]),
        sort_rows(pd.DataFrame(norms, columns=NORM_COLUMNS), RUN_COLS + ["step"]),
    )
