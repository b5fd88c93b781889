"""Probe questions in the anchors' YAML format (Betley et al. / Turner et al.): where the configured files are,
reading and checking them, selecting the probe set, writing it back as one file, and the prompts to generate.

A file is a list of ``{id, type, paraphrases, samples_per_paraphrase, system?, judge?, judge_prompts}``;
YAML anchors/aliases are resolved by the loader. Judge prompt templates are filled in data/judge_prompts.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from emflow.config.sections.questions import Questions
from emflow.data.judge_prompts import PLACEHOLDERS
from emflow.errors import user_error
from emflow.fetch.download import is_url, url_download_path
from emflow.io import atomic_write_text, read_yaml

QUESTION_TYPES = ("free_form_judge_0_100",)
QUESTION_KEYS = ("id", "type", "paraphrases", "samples_per_paraphrase", "system", "judge", "judge_prompts")
# Suffixes of the anchors' variant questions (JSON-answer system prompt, fill-in templates): off by default.
VARIANT_SUFFIXES = ("_json", "_template")


def question_sources(questions: Questions, resources_dir: str) -> list[tuple[str, str | None, str]]:
    """``(file as configured, sha256, local path)`` for ``questions.file`` and every ``questions.extra_files``;
    a URL's local path is its download (the fetch_url rule), a local file is itself."""
    return [
        (f.file, f.sha256, url_download_path(f.file, "questions", resources_dir) if is_url(f.file) else f.file)
        for f in questions.files
    ]


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
    ids: Sequence[str] | None = None,
    samples_per_paraphrase: int | None = None,
    include_variants: bool = False,
    metrics: Sequence[str] | None = None,
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
        selected = [questions[i] for i in ids]
    else:
        selected = [q for q in questions.values() if include_variants or not q.id.endswith(VARIANT_SUFFIXES)]

    if samples_per_paraphrase is not None:
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
    ids: Sequence[str] | None = None,
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
    ids: Sequence[str] | None = None,
    samples_per_paraphrase: int | None = None,
    metrics: Sequence[str] | None = None,
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
