"""`emflow` commands of the analysis stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def aggregate(argv: list[str]) -> None:
    from emflow.analysis.aggregate import cli

    cli(argv)


def figures(argv: list[str]) -> None:
    from emflow.analysis.figures import cli

    cli(argv)


def report(argv: list[str]) -> None:
    from emflow.analysis.report import cli

    cli(argv)
