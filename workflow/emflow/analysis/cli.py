"""``emflow`` commands of the analysis stage: aggregate, figures and report (one function per command)."""

from __future__ import annotations

import argparse

from emflow.cli import json_arg, load_params, setup_logging


def aggregate(argv: list[str]) -> None:
    from emflow.analysis.aggregate import aggregate as run
    from emflow.config.sections.analysis import Analysis

    ap = argparse.ArgumentParser(prog="emflow aggregate", description="EM rates, training and per-question tables")
    ap.add_argument("--judgments", nargs="+", required=True, help="judgments files .../seed<N>/step-<N>.jsonl")
    ap.add_argument("--run-dirs", nargs="*", default=[], help="run folders .../seed<N> with summary.json")
    ap.add_argument("--secondary", nargs="*", default=[], help="the secondary judge's files, one per run (optional)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument(
        "--params", required=True, help="config analysis: section (what the tables use) as inline JSON or a JSON file"
    )
    args = ap.parse_args(argv)
    setup_logging()
    run(
        judgments=args.judgments,
        run_dirs=args.run_dirs,
        out_dir=args.out_dir,
        analysis=load_params(Analysis, args.params, "--params"),
        secondary=args.secondary,
    )


def figures(argv: list[str]) -> None:
    from emflow.analysis.figures import figures as run
    from emflow.config.sections.analysis import Figures

    ap = argparse.ArgumentParser(prog="emflow figures", description="plotnine figures from the aggregate tables")
    ap.add_argument("--tables-dir", required=True, help="the --out-dir of `emflow aggregate`")
    ap.add_argument("--judgments", nargs="+", required=True, help="judgments files (for the answer scatter)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--definition", required=True, help="the EM definition the figures show (e.g. betley)")
    ap.add_argument("--params", required=True, help="config analysis.figures as inline JSON or a JSON file")
    ap.add_argument("--models", default="{}", help="config models (base name -> spec) as JSON, for model sizes")
    args = ap.parse_args(argv)
    setup_logging()
    run(
        tables_dir=args.tables_dir,
        judgments=args.judgments,
        out_dir=args.out_dir,
        definition=args.definition,
        settings=load_params(Figures, args.params, "--params"),
        models=json_arg(args.models, "--models"),
    )


def report(argv: list[str]) -> None:
    from emflow.analysis.report import write_report

    ap = argparse.ArgumentParser(prog="emflow report", description="one self-contained HTML report")
    ap.add_argument("--tables-dir", required=True, help="the --out-dir of `emflow aggregate`")
    ap.add_argument("--figures-dir", required=True, help="the --out-dir of `emflow figures`")
    ap.add_argument("--judgments", nargs="*", default=[], help="judgments files (for the example answers)")
    ap.add_argument("--out", required=True, help="report.html path")
    ap.add_argument(
        "--provenance",
        required=True,
        help="inline JSON or a JSON file: {experiment, config (hashed) or config_hash, definition, judge_model, ...}",
    )
    ap.add_argument("--examples-per-cell", type=int, default=3, help="answers shown per question × persona × step")
    ap.add_argument("--answer-chars", type=int, default=600, help="answers longer than this are cut")
    ap.add_argument(
        "--calibration", nargs="*", default=[], help="judge_calibration.csv of each judge (shown in its own section)"
    )
    args = ap.parse_args(argv)
    setup_logging()
    write_report(
        tables_dir=args.tables_dir,
        figures_dir=args.figures_dir,
        out_path=args.out,
        provenance=json_arg(args.provenance, "--provenance"),
        examples_per_cell=args.examples_per_cell,
        judgments=args.judgments,
        answer_chars=args.answer_chars,
        calibration=args.calibration,
    )
