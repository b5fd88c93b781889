"""What every table shares: the run-key columns, stable row order, column order, and reading and writing a table
by its name (``emflow.analysis.names``) under a tables folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emflow.errors import user_error
from emflow.io import atomic_write_text
from emflow.layout import CELL_KEYS, RUN_KEYS

RUN_COLS = list(RUN_KEYS)  # as lists: tables append further columns
CELL_COLS = list(CELL_KEYS)


def sort_rows(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in a stable order, so equal inputs give byte-identical files."""
    return df.sort_values(by, kind="stable").reset_index(drop=True) if not df.empty else df


def front(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Known columns first (present even when empty), any extra columns after them, sorted."""
    extra = sorted(c for c in df.columns if c not in columns)
    return df.reindex(columns=columns + extra)


def table_path(tables_dir: str | Path, name: str) -> Path:
    return Path(tables_dir) / f"{name}.csv"


def write_table(tables_dir: str | Path, name: str, df: pd.DataFrame) -> Path:
    path = table_path(tables_dir, name)
    atomic_write_text(path, df.to_csv(index=False))
    return path


def read_table(tables_dir: str | Path, name: str) -> pd.DataFrame:
    """A table written by ``emflow aggregate``; a missing one is a one-line error saying which command writes it."""
    path = table_path(tables_dir, name)
    if not path.is_file():
        raise user_error(path, None, "missing", "run `emflow aggregate` first and pass its --out-dir as --tables-dir")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
