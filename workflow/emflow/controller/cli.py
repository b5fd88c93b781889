"""``emflow guard``: run the controller, restarting it gracefully before its CPU time reaches a limit."""

from __future__ import annotations

import argparse

from emflow.cli import setup_logging
from emflow.errors import user_error


def guard(argv: list[str]) -> None:
    from emflow.controller.guard import guard as run_guarded

    ap = argparse.ArgumentParser(prog="emflow guard", description=__doc__)
    ap.add_argument("--limit", type=float, default=480.0, help="CPU seconds (default 480: 8 of Leonardo's 10 min)")
    ap.add_argument("--poll", type=float, default=10.0, help="seconds between looks at the controller's CPU time")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command (snakemake ...)")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise user_error("emflow guard", "command", "no command given", "append `-- snakemake --profile ...`")
    setup_logging()
    try:
        rc = run_guarded(command, args.limit, args.poll)
    except RuntimeError as err:
        raise user_error("emflow guard", "--limit", str(err), "raise --limit or find what burns the CPU") from None
    raise SystemExit(rc)
