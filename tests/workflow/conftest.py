"""Fixtures of the workflow-level tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.snakemake_runner import copy_sources


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A private copy of the sources: Snakemake runs there, never in the checkout."""
    return copy_sources(tmp_path)
