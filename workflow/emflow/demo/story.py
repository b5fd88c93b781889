"""What a finished demo shows, checked: ``make demo`` ends with this and fails when the planted effect is absent.

The story has two parts, both read from the run's own outputs:

1. the judge passed its calibration (``judge_calibration.csv``: AUROC of `aligned` on the world's labelled
   answers), so its scores mean something;
2. the EM rate of the story's run (the no-persona run by default) rises from step 0 to the last step by at
   least ``min_rise``, with non-overlapping Wilson intervals (``tables/em.csv``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from emflow.errors import user_error


def read_calibration(path: str | Path) -> dict[str, dict]:
    path = Path(path)
    if not path.is_file():
        raise user_error(path, None, "no judge calibration table", "run the demo first: make demo")
    with open(path, newline="") as fh:
        return {r["metric"]: r for r in csv.DictReader(fh)}


def em_rise(em_csv: str | Path, *, persona: str, definition: str, seed: int | None = None) -> dict:
    """EM rate and Wilson CI at the first and last step of one run (``seed`` None: the lowest seed)."""
    em_csv = Path(em_csv)
    if not em_csv.is_file():
        raise user_error(em_csv, None, "no EM table", "run the demo first: make demo")
    with open(em_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["persona"] == persona and r["definition"] == definition]
    if seed is None and rows:
        seed = min(int(r["seed"]) for r in rows)
    rows = [r for r in rows if int(r["seed"]) == seed]
    if not rows:
        raise user_error(
            em_csv,
            "persona",
            f"no rows for persona {persona!r}, definition {definition!r}",
            "check demo.story in config/demo.yaml",
        )
    by_step = {int(r["step"]): {k: float(r[k]) for k in ("em_rate", "em_ci_low", "em_ci_high")} for r in rows}
    first, final = min(by_step), max(by_step)
    return {"seed": seed, "first_step": first, "final_step": final, "first": by_step[first], "final": by_step[final]}


def check(results_dir: str | Path, story: dict) -> tuple[list[str], list[str]]:
    """(lines describing what the run shows, problems); no problems means the planted effect is there."""
    res = Path(results_dir)
    lines, problems = [], []
    cal = read_calibration(res / "judge_calibration.csv")
    for metric, r in cal.items():
        lines.append(
            f"judge calibration  {metric:<9} AUROC {float(r['auroc']):.3f} (floor {float(r['min_auroc']):.2f}), "
            f"mean score {float(r['mean_score_positive']):.1f} good vs {float(r['mean_score_negative']):.1f} bad"
        )
        if r["passed"] != "True":
            problems.append(f"the judge fails calibration on {metric} (AUROC {r['auroc']} < {r['min_auroc']})")
    persona, definition, min_rise = story["persona"], story["definition"], float(story["min_rise"])
    rise = em_rise(res / "tables" / "em.csv", persona=persona, definition=definition)
    for key in ("first", "final"):
        v, step = rise[key], rise[f"{key}_step"]
        lines.append(
            f"EM rate ({definition}), persona {persona}, step {step:>3}: {v['em_rate']:.2f} "
            f"[{v['em_ci_low']:.2f}, {v['em_ci_high']:.2f}]"
        )
    delta = rise["final"]["em_rate"] - rise["first"]["em_rate"]
    lines.append(f"rise: {delta:+.2f} (needed: >= {min_rise:.2f} with non-overlapping intervals)")
    if delta < min_rise:
        problems.append(f"the EM rate of persona {persona} rose by {delta:.2f} < {min_rise}")
    if rise["final"]["em_ci_low"] <= rise["first"]["em_ci_high"]:
        problems.append(
            f"the step-{rise['first_step']} and step-{rise['final_step']} intervals of persona {persona} overlap"
        )
    return lines, problems


def cli(argv: list[str]) -> None:
    from emflow.config.experiment import load_config_files, load_experiment

    ap = argparse.ArgumentParser(prog="emflow demo-story", description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", help="config.yaml and overlays (the demo: config.yaml config/demo.yaml)")
    a = ap.parse_args(argv)
    exp = load_experiment(load_config_files(a.configs), source=" + ".join(a.configs))
    story = exp.config.get("demo", {}).get("story")
    if story is None:
        raise user_error(a.configs[-1], "demo.story", "missing", "set persona, definition and min_rise")
    lines, problems = check(Path("results") / exp.name, story)
    print("\n".join(["What the demo shows:", *(f"  {line}" for line in lines)]))
    if problems:
        print(
            "The planted effect is ABSENT: "
            + "; ".join(problems)
            + ". See results/"
            + exp.name
            + "/logs/ (demo_judge and judge_calibration logs first).",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print("The planted effect is present: the judge tells the labels apart and the EM rate climbs.")
