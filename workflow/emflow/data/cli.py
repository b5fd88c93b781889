"""``emflow resolve_questions``, ``prepare_dataset`` and ``split_dataset``: the data rules' commands."""

from __future__ import annotations

import argparse
import json

from emflow.cli import load_params, setup_logging
from emflow.config.sections.datasets import DatasetSpec
from emflow.config.sections.questions import Selection
from emflow.data import prepare, questions, split
from emflow.io import atomic_write_json


def resolve_questions(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow resolve_questions", description=questions.resolve_question_set.__doc__)
    ap.add_argument("--files", nargs="+", required=True, help="question files in the anchors' YAML format")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--select",
        default="{}",
        help='JSON: {"ids": [...], "samples_per_paraphrase": N, "metrics": [...]} (each optional)',
    )
    args = ap.parse_args(argv)
    setup_logging()
    select = load_params(Selection, args.select, "--select")
    chosen = questions.resolve_question_set(
        args.files,
        args.out,
        ids=select.ids,
        samples_per_paraphrase=select.samples_per_paraphrase,
        metrics=select.metrics,
    )
    prompts = sum(len(q.paraphrases) * q.samples_per_paraphrase for q in chosen)
    print(json.dumps({"questions": len(chosen), "prompts": prompts}))


def prepare_dataset(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow prepare_dataset", description="Fetch/decrypt and validate one dataset.")
    ap.add_argument("--name", required=True, help="dataset name (the key under `datasets:` in the config)")
    ap.add_argument("--spec", required=True, help="the dataset's DatasetSpec as JSON (its remote source fetched)")
    ap.add_argument("--resources-dir", required=True, help="where a URL source is downloaded (resources_dir)")
    ap.add_argument("--out", required=True, help="validated JSONL output")
    ap.add_argument("--stats-out", help="optional JSON file for {rows, sha256}")
    args = ap.parse_args(argv)
    setup_logging()
    spec = load_params(DatasetSpec, args.spec, "--spec")
    stats = prepare.prepare_dataset(args.name, spec, args.out, resources_dir=args.resources_dir, source="--spec")
    if args.stats_out:
        atomic_write_json(args.stats_out, stats)
    print(json.dumps(stats))


def split_dataset(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow split_dataset", description="Seeded train/eval split of a dataset.")
    ap.add_argument("--name", required=True, help="dataset name (part of the split hash)")
    ap.add_argument("--in", dest="in_path", required=True, help="validated JSONL from prepare_dataset")
    ap.add_argument("--train-out", required=True)
    ap.add_argument("--eval-out", required=True)
    ap.add_argument("--eval-rows", required=True, type=int)
    ap.add_argument("--split-seed", required=True, type=int)
    args = ap.parse_args(argv)
    setup_logging()
    stats = split.split_dataset(
        args.in_path,
        args.train_out,
        args.eval_out,
        eval_rows=args.eval_rows,
        split_seed=args.split_seed,
        name=args.name,
    )
    print(json.dumps(stats))
