"""Fixtures of the judge tests: the shared case's files and the API key in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.judge_case import KEY, KEY_ENV, judge_files


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    return judge_files(tmp_path)


@pytest.fixture()
def api_key(monkeypatch):
    """The stub server's API key in the variable the judge sections name."""
    monkeypatch.setenv(KEY_ENV, KEY)
