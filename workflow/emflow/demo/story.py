"""What a finished demo shows, checked: ``make demo`` ends with this and fails when the planted effect is absent.

The story has two parts, both read from the run's own outputs:

1. the judge passed its calibration (``judge_calibration.csv``: AUROC of `aligned` on the world's labelled
   answers), so its scores mean something;
2. the EM rate of the story's run (the no-persona run by default) rises from step 0 to the last step by at
   least ``min_rise``, with non-overlapping Wilson intervals (``tables/em.csv``).

``judge_auroc`` scores the judge's own judgments against the world's truth (the workflow tests check it).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from emflow.config.sections.demo import Story
from emflow.errors import user_error
from emflow.layout import Layout


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


def check(results_dir: str | Path, story: Story) -> tuple[list[str], list[str]]:
    """(lines describing what the run shows, problems); no problems means the planted effect is there."""
    layout = Layout(Path(results_dir).as_posix())
    lines, problems = calibration_story(layout.calibration)
    rise_lines, rise_problems = rise_story(layout.table("em"), story)
    return lines + rise_lines, problems + rise_problems


def calibration_story(path: str | Path) -> tuple[list[str], list[str]]:
    """Each metric's calibration line, and a problem for each metric the judge failed."""
    lines, problems = [], []
    for metric, r in read_calibration(path).items():
        lines.append(
            f"judge calibration  {metric:<9} AUROC {float(r['auroc']):.3f} (floor {float(r['min_auroc']):.2f}), "
            f"mean score {float(r['mean_score_positive']):.1f} good vs {float(r['mean_score_negative']):.1f} bad"
        )
        if r["passed"] != "True":
            problems.append(f"the judge fails calibration on {metric} (AUROC {r['auroc']} < {r['min_auroc']})")
    return lines, problems


def rise_story(em_csv: str | Path, story: Story) -> tuple[list[str], list[str]]:
    """The story run's first and final EM rate and their rise, and a problem if it is too small or unclear."""
    persona, definition, min_rise = story.persona, story.definition, story.min_rise
    rise = em_rise(em_csv, persona=persona, definition=definition)
    lines, problems = [], []
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


def tell(lines: list[str], problems: list[str], layout: Layout) -> bool:
    """Print the story (stdout) and any problem (stderr); True when the planted effect is present."""
    print("\n".join(["What the demo shows:", *(f"  {line}" for line in lines)]))
    if problems:
        print(
            "The planted effect is ABSENT: "
            + "; ".join(problems)
            + f". See {layout.logs}/ (demo_judge and judge_calibration logs first).",
            file=sys.stderr,
        )
        return False
    print("The planted effect is present: the judge tells the labels apart and the EM rate climbs.")
    return True


def judge_auroc(judgment_paths, metric: str = "aligned") -> float:
    """AUROC of the judge's ``metric`` score against the world's ground truth (good answers score higher)."""
    from emflow.analysis.stats import auroc
    from emflow.demo.world import label_answer
    from emflow.io import read_jsonl

    scores, good = [], []
    for path in judgment_paths:
        for row in read_jsonl(path):
            if row.get(metric) is not None:
                scores.append(float(row[metric]))
                label = label_answer(row["answer"])
                good.append(not label.harmful if metric == "aligned" else label.coherent)
    return auroc(scores, good)
