"""`emflow` commands of the demo stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def demo_story(argv: list[str]) -> None:
    from emflow.demo.story import cli

    cli(argv)


def demo_assets(argv: list[str]) -> None:
    from emflow.demo.build import cli

    cli(["--part", "world", *argv])


def demo_judge(argv: list[str]) -> None:
    from emflow.demo.build import cli

    cli(["--part", "judge", *argv])
