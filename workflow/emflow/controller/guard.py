"""Keep a long run's controller under a login node's CPU-time limit (Leonardo: ~10 min per process).

``guard`` runs the command (snakemake) as a child and, when the child's own CPU time reaches the limit, stops it
gracefully: SIGTERM makes snakemake submit nothing more and exit once the jobs it has running are done. Then it
starts the command again: a fresh process with a fresh CPU budget that finds nothing running, so no job is
submitted twice. It ends with the exit status of the first run that ends by itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def guard(command: list[str], limit_s: float, poll_s: float = 10.0, max_restarts: int = 20) -> int:
    """Run ``command``; stop it with SIGTERM when its CPU reaches ``limit_s`` and start it again (see above)."""
    for start in range(max_restarts + 1):
        proc = subprocess.Popen(command)
        stopped = False
        while True:
            try:
                rc = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                pass
            try:
                cpu = process_cpu(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if not stopped and cpu >= limit_s:
                log.warning(
                    "%.0f s of CPU >= %.0f s: stopping the controller gracefully (SIGTERM: it exits once its running"
                    " jobs are done), then starting it again",
                    cpu,
                    limit_s,
                )
                proc.send_signal(signal.SIGTERM)
                stopped = True
        if not stopped:
            return rc
        log.warning("restart %d", start + 1)
    raise RuntimeError(f"stopped {max_restarts + 1} times at {limit_s:.0f} s of CPU; raise --limit")
