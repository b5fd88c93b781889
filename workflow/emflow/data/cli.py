"""`emflow` commands of the data stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def resolve_questions(argv: list[str]) -> None:
    from emflow.data.questions import cli_resolve

    cli_resolve(argv)


def prepare_dataset(argv: list[str]) -> None:
    from emflow.data.prepare import cli_prepare

    cli_prepare(argv)


def split_dataset(argv: list[str]) -> None:
    from emflow.data.prepare import cli_split

    cli_split(argv)
