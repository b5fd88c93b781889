"""``emflow <command> ...``: the thin command line the Snakemake rules call.

Rule ``X`` runs ``emflow X``, which is the function ``X`` in ``emflow/<stage>/cli.py``: one name, one hop.
This module dispatches, turns user errors into one line on stderr, and holds the helpers every stage's CLI
shares: JSON arguments, typed config sections from JSON, optional paths and logging.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, TypeVar

# command (= rule name) -> (stage subpackage, one-line description)
COMMANDS = {
    "plan": ("config", "print the resolved experiment grid and checkpoint steps"),
    "demo_assets": ("demo", "build the demo's tiny world: base, personas, probes, encrypted dataset"),
    "demo_judge": ("demo", "train the demo's tiny judge on the world's labels"),
    "fetch_hf": ("fetch", "download a model/adapter snapshot at a pinned revision"),
    "fetch_url": ("fetch", "download a file and verify its sha256"),
    "resolve_questions": ("data", "the probe set from the configured question file(s)"),
    "prepare_dataset": ("data", "decrypt a dataset, strip canaries and validate it"),
    "split_dataset": ("data", "seeded train/eval split of a validated dataset"),
    "train": ("train", "train the EM LoRA on top of the frozen persona"),
    "generate": ("generate", "answer the probe questions at one step or at every step of one run"),
    "judge_calibration": ("judge", "the judge scores a labelled set; stop under the floor"),
    "judge": ("judge", "score answers with the LLM judge"),
    "judge_calibration_secondary": ("judge", "judge_calibration for judge.secondary (its own table)"),
    "judge_secondary": ("judge", "the secondary judge scores a seeded sample of one run's answers"),
    "estimate": ("judge", "judge calls, tokens and dollars the pending judge jobs need"),
    "aggregate": ("analysis", "EM rates, training and per-question tables"),
    "figures": ("analysis", "plotnine figures from the tables"),
    "report": ("analysis", "one HTML report with every table and figure"),
    "demo_story": ("demo", "what the finished demo shows; exits 1 when its planted effect is absent"),
    "guard": ("controller", "run snakemake, restarting it gracefully before its CPU time reaches a limit"),
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

T = TypeVar("T")


def setup_logging(level: int = logging.INFO) -> None:
    """One log format for every command (each rule's log file)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def json_arg(text: str, flag: str) -> Any:
    """A JSON value given inline (``{...}``/``[...]``) or as a path to a JSON file; bad JSON is one line."""
    from emflow.errors import user_error

    if not text.lstrip().startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise user_error(
                flag, None, f"{text!r} is neither inline JSON nor an existing file", "pass '{...}' or a .json path"
            )
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise user_error(flag, None, f"invalid JSON ({err.msg} at char {err.pos})", "pass a JSON object") from None


def load_params(section: type[T], text: str, flag: str) -> T:
    """A typed config section from the JSON a rule passes (built from the validated config: not re-validated)."""
    from emflow.config.sections import from_json_obj

    return from_json_obj(section, json_arg(text, flag), source=flag)


def path_or_none(text: str) -> str | None:
    """``none`` (or empty) means no path: how rules pass an optional persona, adapter or eval file."""
    return None if text in ("", "none", "None") else text


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: emflow <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in COMMANDS:
        print(f"emflow: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from emflow.errors import EmflowError

    try:
        getattr(importlib.import_module(f"emflow.{COMMANDS[name][0]}.cli"), name)(rest)
    except EmflowError as err:
        print(f"emflow {name}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
