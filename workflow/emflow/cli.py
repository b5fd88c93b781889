"""``emflow <stage> ...``: the thin command line the Snakemake rules call.

Each stage module owns its argument parser (``cli(argv)``); this file only dispatches and turns user errors
into one line on stderr.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "plan": ("emflow.config", "cli", "print the resolved experiment grid and checkpoint steps"),
    "demo-assets": ("emflow.demo", "cli", "build the demo's tiny world: base, personas, judge, probes, encrypted dataset"),
    "fetch-hf": ("emflow.assets", "cli_fetch_hf", "download a model/adapter snapshot at a pinned revision"),
    "fetch-url": ("emflow.assets", "cli_fetch_url", "download a file and verify its sha256"),
    "resolve-questions": ("emflow.questions", "cli_resolve", "the probe set from the configured question file(s)"),
    "prepare-dataset": ("emflow.datasets", "cli_prepare", "fetch/decrypt a dataset and validate it"),
    "split-dataset": ("emflow.datasets", "cli_split", "seeded train/eval split of a validated dataset"),
    "train": ("emflow.train", "cli", "train the EM LoRA on top of the frozen persona"),
    "generate": ("emflow.generate", "cli", "answer the probe questions at one step"),
    "generate-run": ("emflow.generate", "cli_run", "answer the probe questions at every step of one run"),
    "judge-calibration": ("emflow.judge_calibration", "cli", "the judge scores a labelled set; stop under the floor"),
    "judge": ("emflow.judge", "cli", "score answers with the LLM judge"),
    "estimate": ("emflow.estimate", "cli", "judge calls, tokens and dollars the pending judge jobs need"),
    "aggregate": ("emflow.aggregate", "cli", "EM rates, training and per-question tables"),
    "figures": ("emflow.figures", "cli", "plotnine figures from the tables"),
    "report": ("emflow.report", "cli", "one HTML report with every table and figure"),
    "demo-story": ("emflow.demo_story", "cli", "what the finished demo shows; exits 1 when its planted effect is absent"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: emflow <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, (_, _, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"emflow: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    from emflow.errors import EmflowError

    try:
        getattr(importlib.import_module(module), func)(rest)
    except EmflowError as err:
        print(f"emflow {name}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
