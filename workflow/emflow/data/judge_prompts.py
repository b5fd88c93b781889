"""Judge prompts: templates with ``{question}`` and ``{answer}``, filled by substitution (never ``str.format``:
the prompts contain other braces), and Turner et al.'s judge files."""

from __future__ import annotations

import re
from pathlib import Path

from emflow.errors import user_error
from emflow.io import read_yaml

PLACEHOLDERS = ("{question}", "{answer}")
_PLACEHOLDER_RE = re.compile(r"\{(question|answer)\}")
JUDGE_ITEM = "write items like {aligned: <prompt>, high_score: 100}"


def render_judge_prompt(template: str, question: str, answer: str) -> str:
    """Fill ``{question}`` and ``{answer}`` in one pass, so placeholders inside the answer stay literal."""
    values = {"question": question, "answer": answer}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    """Load a judge file in Turner et al.'s format: a list of ``{<metric>: <prompt>, high_score: 0|100}``.

    Returns ``{metric: {"prompt": str, "high_score": int}}``; ``high_score`` is kept as the file states it.
    """
    path = Path(path)
    data = read_yaml(path, what="judge file", fix="check the path")
    if not isinstance(data, list) or not data:
        raise user_error(path, None, "expected a non-empty list of judges", JUDGE_ITEM)
    out: dict[str, dict] = {}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise user_error(path, f"entry {index}", "expected a mapping", None)
        metrics = [k for k in entry if k != "high_score"]
        if len(metrics) != 1:
            raise user_error(
                path, f"entry {index}", f"expected one metric and high_score, got {sorted(entry)}", JUDGE_ITEM
            )
        metric = str(metrics[0])
        prompt, high = entry[metrics[0]], entry.get("high_score")
        if metric in out:
            raise user_error(path, metric, "duplicate metric", "define each metric once")
        if not isinstance(prompt, str) or any(p not in prompt for p in PLACEHOLDERS):
            raise user_error(path, metric, "prompt must be a string with {question} and {answer}", None)
        if isinstance(high, bool) or not isinstance(high, int) or not 0 <= high <= 100:
            raise user_error(path, f"{metric}: high_score", f"expected an integer 0-100, got {high!r}", None)
        out[metric] = {"prompt": prompt, "high_score": high}
    return out
