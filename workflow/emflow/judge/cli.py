"""``emflow`` commands of the judge stage: ``judge``, ``judge_calibration``, their ``judge.secondary`` twins
``judge_secondary`` and ``judge_calibration_secondary``, and ``estimate``.

The judge rules pass the judge section in two parts: ``--params`` (what is scored and how: the rule's tracked
params) and ``--runtime`` (speed-only settings, outside the tracked params so tuning them reruns nothing). Both
come from ``Judge.tracked_json()`` / ``Judge.runtime_json()``; a command joins them into one ``Judge``.
"""

from __future__ import annotations

import argparse

from emflow.cli import json_arg, load_params, setup_logging
from emflow.config.sections import from_json_obj
from emflow.config.sections.judge import Calibration, Judge, Sample

RUNTIME_HELP = (
    "JSON merged into --params: settings that change how fast, not what is scored (concurrency, retries, "
    "timeouts); the rule keeps them out of its tracked params"
)


def _judge_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--params", required=True, help="JSON: the config's judge section (the backend's keys)")
    ap.add_argument("--runtime", default="{}", help=RUNTIME_HELP)


def _judge_section(a: argparse.Namespace) -> Judge:
    return from_json_obj(
        Judge, {**json_arg(a.params, "--params"), **json_arg(a.runtime, "--runtime")}, source="--params"
    )


def judge(argv: list[str]) -> None:
    """Score answers with the LLM judge."""
    from emflow.judge.score import judge_generations

    ap = argparse.ArgumentParser(prog="emflow judge", description="Score answers with the LLM judge.")
    ap.add_argument("--generations", required=True, help="generations JSONL from `emflow generate`")
    ap.add_argument("--questions", required=True, help="question YAML with judge_prompts")
    ap.add_argument("--out", required=True, help="output JSONL with scores")
    _judge_args(ap)
    a = ap.parse_args(argv)
    setup_logging()
    judge_generations(
        generations_path=a.generations, questions_path=a.questions, out_path=a.out, judge=_judge_section(a)
    )


def judge_secondary(argv: list[str]) -> None:
    """The secondary judge scores a seeded sample of one run's answers."""
    from emflow.judge.score import judge_secondary as run

    ap = argparse.ArgumentParser(
        prog="emflow judge_secondary",
        description="The secondary judge (judge.secondary) scores a seeded sample of each step's answers of one run.",
    )
    ap.add_argument("--generations", nargs="+", required=True, help="the run's generations files, one per step")
    ap.add_argument("--questions", required=True, help="question YAML with judge_prompts")
    ap.add_argument("--out", required=True, help="output JSONL: the sampled answers' scores, each with its step")
    _judge_args(ap)
    ap.add_argument("--sample", required=True, help="JSON: judge.secondary.sample (fraction or count, seed)")
    a = ap.parse_args(argv)
    setup_logging()
    run(
        generations_paths=a.generations,
        questions_path=a.questions,
        out_path=a.out,
        judge=_judge_section(a),
        sample=load_params(Sample, a.sample, "--sample"),
    )


def judge_calibration_secondary(argv: list[str]) -> None:
    """The secondary judge's calibration gate: ``judge_calibration`` with judge.secondary's keys."""
    judge_calibration(argv, prog="emflow judge_calibration_secondary", field="judge.secondary.calibration.min_auroc")


def judge_calibration(
    argv: list[str], prog: str = "emflow judge_calibration", field: str = "judge.calibration.min_auroc"
) -> None:
    """The judge scores a labelled set; stop under the floor."""
    from emflow.judge.calibration import run

    ap = argparse.ArgumentParser(
        prog=prog,
        description="Before any answer is judged, the configured judge scores a labelled set; stop under the floor.",
    )
    ap.add_argument("--questions", required=True, help="the resolved question YAML (its judge prompts are used)")
    ap.add_argument("--out", required=True, help="output CSV: per metric AUROC, mean score per label, null share")
    _judge_args(ap)
    ap.add_argument("--calibration", required=True, help="JSON: the config's judge.calibration section")
    a = ap.parse_args(argv)
    setup_logging()
    run(
        questions_path=a.questions,
        out_path=a.out,
        judge=_judge_section(a),
        calibration=load_params(Calibration, a.calibration, "--calibration"),
        field=field,
    )


def estimate(argv: list[str]) -> None:
    """Judge calls, tokens and dollars the pending judge jobs need."""
    import json

    from emflow.config.files import load_config_files
    from emflow.judge.estimate import estimate as estimate_pending
    from emflow.judge.estimate import format_table

    ap = argparse.ArgumentParser(
        prog="emflow estimate",
        description="Before spending: how many judge calls, tokens and dollars the pending judge jobs need.",
    )
    ap.add_argument("configfiles", nargs="+", help="config.yaml, then overlays (merged like --configfile)")
    ap.add_argument("--results", default="results", help="the results root (default: results)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    setup_logging()
    est = estimate_pending(load_config_files(a.configfiles), results_root=a.results, source=" + ".join(a.configfiles))
    print(json.dumps(est, indent=2) if a.json else format_table(est))
