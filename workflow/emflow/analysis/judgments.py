"""Judged answers from the judge stage's files, with the run keys and step their paths name."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from emflow.analysis.tables import RUN_COLS
from emflow.errors import user_error
from emflow.io import read_jsonl
from emflow.layout import parse_run_path

REQUIRED_KEYS = ("question_id", "aligned", "coherent")


def read_judged_rows(path: Path, required=REQUIRED_KEYS, stage: str = "the judge stage") -> list[dict]:
    """A judgments file's rows, each checked for the ``required`` keys; a missing file, bad JSON or a missing key
    is one line naming the file and the ``stage`` to re-run."""
    if not path.is_file():
        raise user_error(path, None, "missing", f"run {stage} for this run and step first")
    try:
        rows = read_jsonl(path)
    except json.JSONDecodeError as err:
        raise user_error(path, f"line {err.lineno}", "not valid JSON", f"re-run {stage}") from err
    for i, row in enumerate(rows, 1):
        missing = [k for k in required if k not in row]
        if missing:
            raise user_error(path, f"line {i}", f"missing keys {missing}", f"re-run {stage} for this file")
    return rows


def load_judgments(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All judged answers with run keys and step, plus one row per judgments file (so empty files count).

    ``aligned`` / ``coherent`` are floats with NaN for unscored answers.
    """
    frames, files = [], []
    seen: dict[tuple, Path] = {}
    for path in tqdm(list(paths), desc="read judgments", unit="file", disable=None):
        path = Path(path)
        keys = parse_run_path(path)
        if keys["step"] is None or not path.name.endswith(".jsonl"):
            raise user_error(path, None, "not a judgments file", "pass .../seed<N>/step-<N>.jsonl files")
        ident = tuple(keys[k] for k in RUN_COLS + ["step"])
        if ident in seen:
            raise user_error(path, None, f"duplicates run/step of {seen[ident]}", "pass each judgments file once")
        seen[ident] = path
        rows = read_judged_rows(path)
        df = pd.DataFrame([{k: v for k, v in r.items() if k != "judge"} for r in rows])
        for k, v in keys.items():
            df[k] = v
        frames.append(df)
        judge_models = sorted({str(r["judge_model"]) for r in rows if r.get("judge_model")})
        files.append({**keys, "path": str(path), "judge_model": ";".join(judge_models)})
    base_cols = RUN_COLS + ["step", "question_id", "aligned", "coherent"]
    answers = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=base_cols)
    if answers.empty:
        answers = pd.DataFrame(columns=sorted(set(base_cols) | set(answers.columns)))
    for metric in ("aligned", "coherent"):
        answers[metric] = pd.to_numeric(answers[metric], errors="coerce").astype(float)
    answers["seed"] = answers["seed"].astype("int64")
    answers["step"] = answers["step"].astype("int64")
    return answers, pd.DataFrame(files, columns=RUN_COLS + ["step", "path", "judge_model"])
