"""`emflow` commands of the fetch stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def fetch_hf(argv: list[str]) -> None:
    from emflow.fetch.hub import cli_fetch_hf

    cli_fetch_hf(argv)


def fetch_url(argv: list[str]) -> None:
    from emflow.fetch.hub import cli_fetch_url

    cli_fetch_url(argv)
