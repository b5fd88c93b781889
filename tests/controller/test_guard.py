"""emflow guard: the controller stopped gracefully at its CPU limit and started again."""

from __future__ import annotations

import sys
import textwrap

import pytest

from emflow.cli import main
from emflow.controller.guard import guard


def test_guard_stops_a_controller_at_its_cpu_limit_and_starts_it_again(tmp_path):
    # A stand-in controller: its first start burns CPU until SIGTERM (then exits as snakemake does after a
    # graceful stop); the second start finds the work done and exits 0.
    marker, starts = tmp_path / "first_done", tmp_path / "starts.log"
    child = tmp_path / "controller.py"
    child.write_text(
        textwrap.dedent(
            f"""
            import pathlib, signal, sys
            with open({str(starts)!r}, "a") as f:
                f.write("start\\n")
            marker = pathlib.Path({str(marker)!r})
            if marker.exists():
                sys.exit(0)
            signal.signal(signal.SIGTERM, lambda *_: (marker.touch(), sys.exit(1)))
            while True:
                sum(range(10000))
            """
        )
    )
    rc = guard([sys.executable, str(child)], limit_s=0.5, poll_s=0.1)
    assert rc == 0
    assert marker.exists() and starts.read_text().splitlines() == ["start", "start"]


def test_guard_passes_on_a_run_that_ends_by_itself(tmp_path):
    assert guard([sys.executable, "-c", "raise SystemExit(3)"], limit_s=60, poll_s=0.1) == 3


def test_cli_without_a_command_is_one_line(capsys):
    assert main(["guard", "--limit", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-- snakemake" in err


def test_cli_ends_with_the_commands_exit_status():
    with pytest.raises(SystemExit) as done:
        main(["guard", "--poll", "0.1", "--", sys.executable, "-c", "raise SystemExit(4)"])
    assert done.value.code == 4
