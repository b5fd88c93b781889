"""Chat rows: the ``{"messages": [{"role", "content"}, ...]}`` JSONL every dataset is validated into.

One checker for every reader (prepare_dataset on fetched text, training on the split files), so a bad row is
the same one-line error naming ``file:line``, the field and the fix wherever it is found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from emflow.errors import user_error

ROLES = ("system", "user", "assistant")
CHAT_FIX = (
    'each line must be {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
)


def _check_messages(messages: object, at: str) -> list[dict]:
    """One row's messages as ``[{"role", "content"}, ...]``, ending with the assistant turn to learn."""
    if not isinstance(messages, list) or not messages:
        raise user_error(at, "messages", "missing or not a non-empty list", CHAT_FIX)
    clean = []
    for j, msg in enumerate(messages):
        field = f"messages[{j}]"
        if not isinstance(msg, dict):
            raise user_error(at, field, f"expected an object, got {type(msg).__name__}", CHAT_FIX)
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise user_error(at, f"{field}.role", f"{role!r} is not one of {', '.join(ROLES)}", CHAT_FIX)
        if not isinstance(content, str):
            raise user_error(at, f"{field}.content", f"expected a string, got {type(content).__name__}", CHAT_FIX)
        if not content.strip():
            raise user_error(at, f"{field}.content", "empty content", "drop the row or fill in the message")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise user_error(
            at,
            "messages",
            f"last turn is {clean[-1]['role']!r}, not 'assistant'",
            "end every row with the assistant reply that training should learn",
        )
    return clean


def validate_chat_rows(lines: Iterable[str], source: str, expected_rows: int | None = None) -> list[dict]:
    """Parse and check JSONL chat rows; return ``[{"messages": [{"role", "content"}, ...]}, ...]``.

    Blank lines are skipped but counted, so ``source:line`` in errors points at the real line.
    """
    rows: list[dict] = []
    for i, line in enumerate(tqdm(lines, desc=f"validate {Path(source).name}", unit="row", leave=False), 1):
        if not line.strip():
            continue
        at = f"{source}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise user_error(at, None, f"not valid JSON ({err.msg} at column {err.colno})", CHAT_FIX) from None
        if not isinstance(row, dict):
            raise user_error(at, None, f"expected a JSON object, got {type(row).__name__}", CHAT_FIX)
        rows.append({"messages": _check_messages(row.get("messages"), at)})
    if not rows:
        raise user_error(source, None, "no rows", "check that the file is the dataset you meant")
    if expected_rows is not None and len(rows) != expected_rows:
        raise user_error(
            source,
            "rows",
            f"expected {expected_rows} rows, found {len(rows)}",
            "check that this is the right file, or correct the `rows` value in the config",
        )
    return rows


def read_chat_rows(path: str | Path) -> list[dict]:
    """The validated chat rows of a JSONL file; any problem is one line naming ``file[:line]`` and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not data
    except FileNotFoundError:
        raise user_error(path, None, "does not exist", "check the path, or run the rule that writes it") from None
    except UnicodeDecodeError as err:
        raise user_error(path, None, f"not UTF-8 text (byte {err.start})", "save the file as UTF-8") from None
    except OSError as err:
        raise user_error(path, None, f"cannot read it ({err.strerror})", "check the path and its permissions") from None
    # split on "\n" only: str.splitlines would also cut at U+2028 and friends, which JSON strings may hold raw
    return validate_chat_rows(text.split("\n"), str(path))
