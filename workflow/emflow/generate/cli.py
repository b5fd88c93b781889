"""`emflow` commands of the generate stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def generate(argv: list[str]) -> None:
    from emflow.generate.run import cli

    cli(argv)


def generate_run(argv: list[str]) -> None:
    from emflow.generate.run import cli_run

    cli_run(argv)
