"""`emflow` commands of the config stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def plan(argv: list[str]) -> None:
    from emflow.config.experiment import cli

    cli(argv)
