"""`emflow` commands of the judge stage (temporary delegation; see emflow/cli.py)."""

from __future__ import annotations


def judge_calibration(argv: list[str]) -> None:
    from emflow.judge.calibration import cli

    cli(argv)


def judge(argv: list[str]) -> None:
    from emflow.judge.score import cli

    cli(argv)


def estimate(argv: list[str]) -> None:
    from emflow.judge.estimate import cli

    cli(argv)
