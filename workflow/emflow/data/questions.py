"""Probe questions in the anchors' YAML format (Betley et al. / Turner et al.) and their judge prompts.

A file is a list of ``{id, type, paraphrases, samples_per_paraphrase, system?, judge?, judge_prompts}``;
YAML anchors/aliases are resolved by the loader. Each judge prompt is a template with ``{question}`` and
``{answer}``; the prompts contain other braces, so they are filled by substitution, never ``str.format``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from emflow.errors import user_error
from emflow.io import atomic_write_text, read_yaml

QUESTION_TYPES = ("free_form_judge_0_100",)
QUESTION_KEYS = ("id", "type", "paraphrases", "samples_per_paraphrase", "system", "judge", "judge_prompts")
# Suffixes of the anchors' variant questions (JSON-answer system prompt, fill-in templates): off by default.
VARIANT_SUFFIXES = ("_json", "_template")
PLACEHOLDERS = ("{question}", "{answer}")
_PLACEHOLDER_RE = re.compile(r"\{(question|answer)\}")


@dataclass(frozen=True)
class Question:
    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int
    system: str | None
    judge_prompts: dict[str, str]

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.judge_prompts)


def _load_yaml(path: Path) -> object:
    return read_yaml(path, what="question file", fix="check questions.file")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_question(entry: object, index: int, path: Path) -> Question:
    if not isinstance(entry, dict):
        raise user_error(
            path,
            f"entry {index}",
            f"expected a mapping, got {type(entry).__name__}",
            "each list item must be a question with id, paraphrases, judge_prompts",
        )
    qid = entry.get("id")
    if not isinstance(qid, str) or not qid.strip():
        raise user_error(path, f"entry {index}: id", "missing or not a string", "give every question a unique id")
    unknown = sorted(set(entry) - set(QUESTION_KEYS))
    if unknown:
        raise user_error(path, f"{qid}: {unknown[0]}", "unknown key", f"valid keys: {', '.join(QUESTION_KEYS)}")
    qtype = entry.get("type", QUESTION_TYPES[0])
    if qtype not in QUESTION_TYPES:
        raise user_error(
            path, f"{qid}: type", f"unsupported type {qtype!r}", f"valid types: {', '.join(QUESTION_TYPES)}"
        )

    paraphrases = entry.get("paraphrases")
    if not isinstance(paraphrases, list) or not paraphrases:
        raise user_error(path, f"{qid}: paraphrases", "missing or empty", "list at least one phrasing of the question")
    for j, text in enumerate(paraphrases):
        if not isinstance(text, str) or not text.strip():
            raise user_error(path, f"{qid}: paraphrases[{j}]", "empty or not a string", "write the question text")

    n = entry.get("samples_per_paraphrase")
    if not _positive_int(n):
        raise user_error(path, f"{qid}: samples_per_paraphrase", f"expected a positive integer, got {n!r}", None)

    system = entry.get("system")
    if system is not None and not isinstance(system, str):
        raise user_error(path, f"{qid}: system", "expected a string or nothing", None)

    prompts = entry.get("judge_prompts")
    if not isinstance(prompts, dict) or not prompts:
        raise user_error(
            path,
            f"{qid}: judge_prompts",
            "missing or empty",
            "map each metric (e.g. aligned, coherent) to a prompt with {question} and {answer}",
        )
    for metric, template in prompts.items():
        field = f"{qid}: judge_prompts.{metric}"
        if not isinstance(template, str):
            raise user_error(path, field, "expected a prompt string", None)
        missing = [p for p in PLACEHOLDERS if p not in template]
        if missing:
            raise user_error(
                path,
                field,
                f"prompt lacks {' and '.join(missing)}",
                "the judge needs both {question} and {answer} in every prompt",
            )
    return Question(
        id=qid,
        paraphrases=tuple(paraphrases),
        samples_per_paraphrase=n,
        system=system,
        judge_prompts={str(k): v for k, v in prompts.items()},
    )


def read_question_file(path: str | Path) -> dict[str, Question]:
    """Every question of one file, by id, in file order (checked; no selection)."""
    path = Path(path)
    data = _load_yaml(path)
    if not isinstance(data, list) or not data:
        raise user_error(path, None, "expected a non-empty list of questions", "see the anchors' question format")
    questions: dict[str, Question] = {}
    for index, entry in enumerate(data):
        q = _parse_question(entry, index, path)
        if q.id in questions:
            raise user_error(path, f"{q.id}: id", "duplicate question id", "give every question a unique id")
        questions[q.id] = q
    return questions


def select_questions(
    questions: dict[str, Question],
    source: str | Path,
    *,
    ids: list[str] | None = None,
    samples_per_paraphrase: int | None = None,
    include_variants: bool = False,
    metrics: list[str] | None = None,
) -> list[Question]:
    """``ids`` selects questions in the given order (variants may be named explicitly); without it, every
    question except the ``_json``/``_template`` variants is kept unless ``include_variants``.
    ``samples_per_paraphrase`` overrides every question's value; ``metrics`` keeps only those judge prompts."""
    if ids is not None:
        unknown = [i for i in ids if i not in questions]
        if unknown:
            raise user_error(
                source,
                "ids",
                f"unknown question id(s) {', '.join(map(repr, unknown))}",
                f"valid ids: {', '.join(questions)}",
            )
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise user_error(source, "ids", f"selected more than once: {', '.join(dupes)}", "list each id once")
        selected = [questions[i] for i in ids]
    else:
        selected = [q for q in questions.values() if include_variants or not q.id.endswith(VARIANT_SUFFIXES)]

    if samples_per_paraphrase is not None:
        if not _positive_int(samples_per_paraphrase):
            raise user_error(
                "config",
                "questions.samples_per_paraphrase",
                f"expected a positive integer, got {samples_per_paraphrase!r}",
                None,
            )
        selected = [replace(q, samples_per_paraphrase=samples_per_paraphrase) for q in selected]
    if metrics is not None:
        # Domain metrics exist on some questions only (medical on the medical set): keep what each question has,
        # but a metric no question has is a typo.
        known = {m for q in selected for m in q.judge_prompts}
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise user_error(
                "config",
                "questions.metrics",
                f"no selected question has {', '.join(unknown)}",
                f"use metrics among {', '.join(sorted(known))}",
            )
        selected = [
            replace(q, judge_prompts={m: p for m, p in q.judge_prompts.items() if m in metrics}) for q in selected
        ]
        empty = [q.id for q in selected if not q.judge_prompts]
        if empty:
            raise user_error(
                source,
                f"{empty[0]}: judge_prompts",
                "none of questions.metrics applies to it",
                "add one of its metrics or leave the question out",
            )
    return selected


def load_questions(
    path: str | Path,
    *,
    ids: list[str] | None = None,
    samples_per_paraphrase: int | None = None,
    include_variants: bool = False,
) -> list[Question]:
    """Load, check and select the questions of one file (see ``select_questions``)."""
    return select_questions(
        read_question_file(path),
        path,
        ids=ids,
        samples_per_paraphrase=samples_per_paraphrase,
        include_variants=include_variants,
    )


def load_question_set(
    paths: list[str | Path],
    *,
    ids: list[str] | None = None,
    samples_per_paraphrase: int | None = None,
    metrics: list[str] | None = None,
) -> list[Question]:
    """The experiment's probe set from one or more question files (ids unique across files)."""
    merged: dict[str, Question] = {}
    origin: dict[str, Path] = {}
    for path in map(Path, paths):
        for qid, q in read_question_file(path).items():
            if qid in merged:
                raise user_error(
                    path,
                    f"{qid}: id",
                    f"also defined in {origin[qid]}",
                    "select one of the two files' questions by id, or rename one",
                )
            merged[qid], origin[qid] = q, path
    return select_questions(
        merged, " + ".join(map(str, paths)), ids=ids, samples_per_paraphrase=samples_per_paraphrase, metrics=metrics
    )


def resolve_question_set(paths: list[str | Path], out_path: str | Path, **select) -> list[Question]:
    """Write the probe set (``load_question_set``) as one file in the same format.

    Generation and judging both read this file, so they can never disagree on questions or judge prompts.
    """
    selected = load_question_set(paths, **select)
    write_questions(selected, out_path)
    return selected


def cli_resolve(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="emflow resolve-questions", description=resolve_question_set.__doc__)
    ap.add_argument("--files", nargs="+", required=True, help="question files in the anchors' YAML format")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--select",
        default="{}",
        help='JSON: {"ids": [...], "samples_per_paraphrase": N, "metrics": [...]} (each optional)',
    )
    args = ap.parse_args(argv)
    select = json.loads(args.select)
    unknown = set(select) - {"ids", "samples_per_paraphrase", "metrics"}
    if unknown:
        raise user_error(
            "--select", ", ".join(sorted(unknown)), "unknown key", "use ids, samples_per_paraphrase, metrics"
        )
    chosen = resolve_question_set(args.files, args.out, **select)
    print(
        json.dumps(
            {"questions": len(chosen), "prompts": sum(len(q.paraphrases) * q.samples_per_paraphrase for q in chosen)}
        )
    )


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    """Load a judge file in Turner et al.'s format: a list of ``{<metric>: <prompt>, high_score: 0|100}``.

    Returns ``{metric: {"prompt": str, "high_score": int}}``; ``high_score`` is kept as the file states it.
    """
    path = Path(path)
    data = _load_yaml(path)
    if not isinstance(data, list) or not data:
        raise user_error(
            path, None, "expected a non-empty list of judges", "write items like {aligned: <prompt>, high_score: 100}"
        )
    out: dict[str, dict] = {}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise user_error(path, f"entry {index}", "expected a mapping", None)
        metrics = [k for k in entry if k != "high_score"]
        if len(metrics) != 1:
            raise user_error(
                path,
                f"entry {index}",
                f"expected one metric and high_score, got {sorted(entry)}",
                "write items like {aligned: <prompt>, high_score: 100}",
            )
        metric = str(metrics[0])
        prompt, high = entry[metrics[0]], entry.get("high_score")
        if metric in out:
            raise user_error(path, metric, "duplicate metric", "define each metric once")
        if not isinstance(prompt, str) or any(p not in prompt for p in PLACEHOLDERS):
            raise user_error(path, metric, "prompt must be a string with {question} and {answer}", None)
        if isinstance(high, bool) or not isinstance(high, int) or not 0 <= high <= 100:
            raise user_error(path, f"{metric}: high_score", f"expected an integer 0-100, got {high!r}", None)
        out[metric] = {"prompt": prompt, "high_score": high}
    return out


def iter_prompts(questions: Iterable[Question]) -> list[dict]:
    """One generation request per (question, paraphrase, sample), in a stable order."""
    return [
        {
            "question_id": q.id,
            "paraphrase_index": p,
            "sample_index": s,
            "question": text,
            "system": q.system,
        }
        for q in questions
        for p, text in enumerate(q.paraphrases)
        for s in range(q.samples_per_paraphrase)
    ]


def render_judge_prompt(template: str, question: str, answer: str) -> str:
    """Fill ``{question}`` and ``{answer}`` in one pass, so placeholders inside the answer stay literal."""
    values = {"question": question, "answer": answer}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (judge prompts) as ``|-`` blocks like the anchors' files."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def write_questions(questions: Iterable[Question], path: str | Path) -> None:
    """Write questions in the loader's format (atomically)."""
    entries = []
    for q in questions:
        entry: dict = {
            "id": q.id,
            "type": QUESTION_TYPES[0],
            "paraphrases": list(q.paraphrases),
            "samples_per_paraphrase": q.samples_per_paraphrase,
        }
        if q.system is not None:
            entry["system"] = q.system
        entry["judge_prompts"] = dict(q.judge_prompts)
        entries.append(entry)
    text = yaml.dump(entries, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=1000)
    atomic_write_text(path, text)
