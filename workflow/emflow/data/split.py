"""Seeded train/eval split of a prepared dataset: each row's side depends only on the seed, the name and the row."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from emflow.errors import user_error
from emflow.io import read_jsonl, sha256_file, write_jsonl

log = logging.getLogger(__name__)


def _split_key(split_seed: int, name: str, row: dict) -> str:
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{split_seed}:{name}:{canonical}".encode()).hexdigest()


def split_dataset(
    in_path: str | Path,
    train_out: str | Path,
    eval_out: str | Path,
    *,
    eval_rows: int,
    split_seed: int,
    name: str,
) -> dict:
    """Seeded train/eval split: the ``eval_rows`` rows with the smallest hash of (seed, name, row) go to eval.

    Each row's fate depends only on the seed, the dataset's name and the row itself, so the split is the same
    on every run and unaffected by other datasets or training seeds. Both parts keep the original order.
    """
    rows = read_jsonl(in_path)
    if not 0 <= eval_rows < len(rows):  # the file, not the config: the schema already checked the number
        raise user_error(
            in_path,
            f"datasets.{name}.eval_rows",
            f"{eval_rows!r} is not in 0..{len(rows) - 1} ({len(rows)} rows)",
            "choose fewer eval rows than the dataset has",
        )
    ranked = sorted(range(len(rows)), key=lambda i: (_split_key(split_seed, name, rows[i]), i))
    eval_idx = set(ranked[:eval_rows])
    train = [r for i, r in enumerate(rows) if i not in eval_idx]
    held = [r for i, r in enumerate(rows) if i in eval_idx]
    write_jsonl(eval_out, held)
    write_jsonl(train_out, train)
    stats = {
        "train_rows": len(train),
        "eval_rows": len(held),
        "train_sha256": sha256_file(train_out),
        "eval_sha256": sha256_file(eval_out),
    }
    log.info("split %s (seed %d): %d train / %d eval", name, split_seed, len(train), len(held))
    return stats
