"""`emflow` commands of the train stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def train(argv: list[str]) -> None:
    from emflow.train.run import cli

    cli(argv)
