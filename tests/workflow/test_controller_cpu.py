"""benchmarks/controller_cpu.py: the controller's CPU split into rates (emflow guard: tests/controller/).

The measurement itself runs in tests/workflow/test_slurm.py (the demo's controller through a real Slurm).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("controller_cpu", ROOT / "benchmarks" / "controller_cpu.py")
controller_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(controller_cpu)


def test_rates_split_startup_waiting_and_per_job_cost():
    # 2 s of start-up until the first submission (t=100), then 0.001 CPU-s per s while waiting and 1 s for each
    # burst of two submissions (sampled at t=105 and t=405): 0.5 s per job.
    submits = [100.0, 100.0, 400.0, 400.0]
    samples, cpu = [], 0.0
    for t in range(5, 601, 5):
        cpu = 0.02 * t if t <= 100 else cpu + 0.005 + (1.0 if t in (105, 405) else 0.0)
        samples.append((float(t), round(cpu, 4)))
    measured = {"wall_s": 600.0, "cpu_s": samples[-1][1], "children_cpu_s": 0.0, "samples": samples}
    calls = [{"t": t, "cmd": "sbatch"} for t in submits] + [{"t": t, "cmd": "squeue"} for t in range(140, 600, 40)]
    r = controller_cpu.rates(measured, calls)
    assert r["jobs"] == 4 and r["startup_cpu_s"] == 2.0
    assert abs(r["waiting_cpu_per_hour_s"] - 3.6) < 0.01  # 0.001 CPU-s per s
    assert abs(r["cpu_per_job_s"] - 0.5) < 0.01
