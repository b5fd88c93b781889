"""One self-contained HTML report: figures (base64 PNG), tables, example answers and provenance."""

from __future__ import annotations

import argparse
import base64
import html
import importlib.metadata
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pandas as pd

from emflow.analysis.aggregate import OUTPUT_FILES, load_json_arg, load_judgments, parse_definitions, setup_logging
from emflow.analysis.figures import FIGURES
from emflow.errors import user_error
from emflow.io import atomic_write_text, stable_hash

log = logging.getLogger(__name__)

PACKAGES = ["torch", "transformers", "peft", "trl", "snakemake", "plotnine", "pandas"]
# Environment variables whose values must never appear in the report, whatever path they took to get there.
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8

FIGURE_CAPTIONS = {
    "em_trajectory": "EM rate ({definition} definition) at each training step per persona, pooled over seeds, "
    "with bootstrap confidence bands, one panel per EM dataset × base model; step 0 is the persona alone, before "
    "EM training, and the dashed line carries each persona's step-0 rate across as its baseline.",
    "coherence_trajectory": "Share of answers the judge scores as coherent at each step per persona, with "
    "bootstrap confidence bands; dashed: each persona's step-0 share.",
    "loss_curves": "Training loss of the EM LoRA per optimizer step, one line per run.",
    "aligned_vs_coherent": "Every scored answer at step 0 and at the final step by coherence and alignment, "
    "with the {definition} EM region shaded.",
    "lora_norms": "Frobenius norms of the EM adapter's A, B and update B·A (summed over modules) per checkpoint "
    "beside the same run's EM rate, one row per EM dataset × base model.",
    "domain_by_size": "EM rate ({definition}) at each cell's final step against base model size (ordered by "
    "parameter count from config analysis.figures.model_sizes or parsed from the model name), one line per EM "
    "dataset, one panel per persona, with bootstrap confidence intervals.",
}
# (table name, caption, collapsed): the order the tables appear in.
TABLES = [
    (
        "hypotheses",
        "Pre-declared hypotheses: EM-rate difference (cell − baseline) at the final step with its "
        "bootstrap interval and verdict.",
        False,
    ),
    (
        "em_by_cell",
        "EM and coherence rates per cell and step, pooled over seeds, with bootstrap intervals over "
        "seeds and answers (a rate of exactly 0 gets the degenerate interval [0, 0]).",
        False,
    ),
    ("training", "One row per training run: final loss, token accuracy, runtime and throughput.", False),
    ("definitions", "The EM definitions every rate in this report is computed under.", False),
    ("em", "EM rates per run (seed) and step with Wilson score intervals.", True),
    ("per_question", "EM rates per question, cell and step, pooled over seeds.", True),
    ("lora_norms", "Norms of the EM adapter's A, B and B·A per saved checkpoint, summed over modules.", True),
    ("training_steps", "Every logged training step of every run.", True),
]
EXAMPLES_CAPTION = (
    "Example answers ({n} per question × persona × step, first by seed and sample index) with "
    "their judge scores; EM under the {definition} definition."
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption,.caption{color:#444;font-style:italic;margin:.3em 0 .6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
th{background:#f4f4f4}td.answer{max-width:600px;white-space:pre-wrap}details{margin:.6em 0}
.scroll{overflow-x:auto}
"""


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the workflow's source tree, or "unknown"."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = res.stdout.strip()
    return out if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", out) else "unknown"


def package_versions(packages: list[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def redact_secrets(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace the value of every secret-looking environment variable with ``[redacted]``."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if SECRET_NAME_RE.search(name) and len(value) >= MIN_SECRET_LEN:
            for form in {value, html.escape(value)}:
                if form in text:
                    log.warning("redacted the value of $%s from the report", name)
                    text = text.replace(form, "[redacted]")
    return text


def _table_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(no rows)</em></p>"
    return (
        '<div class="scroll">'
        + df.to_html(index=False, na_rep="—", border=0, escape=True, float_format=lambda x: f"{x:.4g}")
        + "</div>"
    )


def _read_table(tables_dir: Path, name: str) -> pd.DataFrame:
    path = tables_dir / OUTPUT_FILES[name]
    if not path.is_file():
        raise user_error(path, None, "missing", "run `emflow aggregate` and pass its --out-dir as --tables-dir")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _figure_html(figures_dir: Path, name: str, caption: str) -> str:
    path = figures_dir / f"{name}.png"
    if not path.is_file():
        raise user_error(path, None, "missing", "run `emflow figures` and pass its --out-dir as --figures-dir")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure id="fig-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def example_answers(
    answers: pd.DataFrame, definitions: pd.DataFrame, definition: str, per_cell: int, answer_chars: int
) -> pd.DataFrame:
    """First ``per_cell`` answers per question × persona × step (and base × dataset), by seed and sample."""
    if answers.empty or per_cell <= 0:
        return pd.DataFrame(columns=["question_id", "persona", "step", "seed", "aligned", "coherent", "em", "answer"])
    spec = definitions.set_index("definition").loc[definition]
    key = "aligned_at_most" if bool(spec["aligned_inclusive"]) else "aligned_below"
    raw = {
        key: float(spec["aligned_threshold"]),
        "coherent_above": float(spec["coherent_above"]),
        "population": spec["population"],
    }
    d = parse_definitions({definition: raw}, "definitions.csv")[definition]
    order = [c for c in ("seed", "paraphrase_index", "sample_index") if c in answers.columns]
    cell = ["question_id", "persona", "step", "dataset", "base"]
    df = answers.sort_values(cell + order, kind="stable").groupby(cell, sort=True).head(per_cell).copy()
    counted, em = d.masks(df["aligned"].to_numpy(float), df["coherent"].to_numpy(float))
    df["em"] = ["yes" if e else ("no" if c else "not counted") for c, e in zip(counted, em)]
    text = df["answer"].fillna("").astype(str) if "answer" in df else pd.Series("", index=df.index)
    df["answer"] = [t if len(t) <= answer_chars else t[:answer_chars] + "…" for t in text]
    cols = ["question_id", "persona", "dataset", "base", "step", "seed", "aligned", "coherent", "em", "answer"]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def _examples_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(no answers)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, val in zip(df.columns, rec):
            shown = "—" if pd.isna(val) else (f"{val:.1f}" if isinstance(val, float) else str(val))
            cls = ' class="answer"' if col == "answer" else ""
            cells.append(f"<td{cls}>{html.escape(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def provenance_rows(provenance: dict, em: pd.DataFrame, definitions: pd.DataFrame) -> list[tuple[str, str]]:
    """(field, value) pairs: config hash, git commit, package versions, judge model, EM definition, extras."""
    prov = dict(provenance)
    config = prov.pop("config", None)
    config_hash = prov.pop("config_hash", None) or (stable_hash(config) if config is not None else "unknown")
    definition = str(prov.pop("definition", "unknown"))
    judge = prov.pop("judge_model", None)
    if not judge and "judge_model" in em.columns:
        judge = "; ".join(sorted({m for v in em["judge_model"].dropna() for m in str(v).split(";") if m}))
    rows = [
        ("experiment", str(prov.pop("experiment", "unknown"))),
        ("config hash (sha256)", config_hash),
        ("git commit", git_commit()),
        ("judge model", judge or "unknown"),
        ("EM definition", definition),
    ]
    if not definitions.empty and definition in set(definitions["definition"]):
        rule = definitions.set_index("definition").loc[definition]
        rows.append(("EM rule", f"{rule['em_rule']} (population: {rule['population']})"))
    rows += [(f"version: {k}", v) for k, v in package_versions().items()]
    for k, v in sorted(prov.items()):
        rows.append((str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)))
    return rows


CALIBRATION_CAPTION = (
    "Before any answer was judged, the judge scored emflow's labelled calibration set with "
    "this experiment's judge prompts. AUROC: the chance that a good answer (aligned, or coherent) "
    "scores above a bad one; the run stops when it is under min_auroc. Mean scores per label and "
    "the share of null scores (too little probability on 0-100) show how the judge behaves."
)


def write_report(
    *,
    tables_dir: str | Path,
    figures_dir: str | Path,
    out_path: str | Path,
    provenance: dict,
    examples_per_cell: int,
    judgments: list[str | Path] = (),
    answer_chars: int = 600,
    calibration: str | Path | None = None,
) -> Path:
    """Write ``out_path`` (HTML, every asset inline) and return it."""
    if not isinstance(provenance, dict):
        raise user_error("--provenance", None, "must be a JSON object", "e.g. {experiment, config, definition}")
    if not isinstance(examples_per_cell, int) or examples_per_cell < 0:
        raise user_error(
            "report", "examples_per_cell", f"must be a non-negative integer, got {examples_per_cell!r}", "e.g. 3"
        )
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables = {name: _read_table(tables_dir, name) for name, _, _ in TABLES}
    known = list(tables["definitions"]["definition"]) if "definition" in tables["definitions"] else []
    definition = provenance.get("definition")
    em_definition = provenance.get("em_definition")  # {name: thresholds}, as the Snakemake rule passes it
    if definition is None and isinstance(em_definition, dict) and len(em_definition) == 1:
        definition = next(iter(em_definition))
    definition = str(definition if definition is not None else (known[0] if known else "unknown"))
    if definition not in known:
        raise user_error(
            "--provenance", "definition", f"unknown definition {definition!r}", f"use one of {sorted(known)}"
        )
    prov = {**provenance, "definition": definition}
    experiment = str(provenance.get("experiment", "emflow"))

    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>emflow report: '
        f"{html.escape(experiment)}</title><style>{CSS}</style></head><body>",
        f"<h1>Emergent misalignment report: {html.escape(experiment)}</h1>",
    ]
    parts.append(
        '<h2 id="provenance">Provenance</h2><p class="caption">Where these results come from: configuration '
        "hash, code version, package versions, judge model and EM definition.</p><table><tbody>"
    )
    for k, v in provenance_rows(prov, tables["em"], tables["definitions"]):
        parts.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>")
    parts.append("</tbody></table>")

    if calibration is not None:
        cal = pd.read_csv(calibration)
        parts.append(
            '<h2 id="calibration">Judge calibration</h2><p class="caption">'
            + html.escape(CALIBRATION_CAPTION)
            + f"</p>{_table_html(cal)}"
        )
    parts.append('<h2 id="figures">Figures</h2>')
    for name in FIGURES:
        parts.append(_figure_html(figures_dir, name, FIGURE_CAPTIONS[name].format(definition=definition)))

    parts.append('<h2 id="tables">Tables</h2>')
    for name, caption, collapsed in TABLES:
        body = f'<p class="caption">{html.escape(caption)}</p>{_table_html(tables[name])}'
        title = f"{OUTPUT_FILES[name]} ({len(tables[name])} rows)"
        if collapsed:
            summary = f"<summary><strong>{html.escape(title)}</strong></summary>"
            parts.append(f'<details id="tab-{name}">{summary}{body}</details>')
        else:
            parts.append(f'<section id="tab-{name}"><h3>{html.escape(title)}</h3>{body}</section>')

    answers, _ = load_judgments(judgments)
    examples = example_answers(answers, tables["definitions"], definition, examples_per_cell, answer_chars)
    caption = EXAMPLES_CAPTION.format(n=examples_per_cell, definition=definition)
    parts.append(f'<h2 id="examples">Example responses</h2><p class="caption">{html.escape(caption)}</p>')
    parts.append(f"<details open><summary>{len(examples)} answers</summary>{_examples_html(examples)}</details>")
    parts.append("</body></html>\n")

    out_path = Path(out_path)
    atomic_write_text(out_path, redact_secrets("\n".join(parts)))
    log.info("wrote %s (%d figures, %d tables, %d example answers)", out_path, len(FIGURES), len(TABLES), len(examples))
    return out_path


def cli(argv: list[str]) -> None:
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
    ap.add_argument("--calibration", default=None, help="judge_calibration.csv (shown in its own section)")
    args = ap.parse_args(argv)
    setup_logging()
    write_report(
        tables_dir=args.tables_dir,
        figures_dir=args.figures_dir,
        out_path=args.out,
        provenance=load_json_arg(args.provenance, "--provenance"),
        examples_per_cell=args.examples_per_cell,
        judgments=args.judgments,
        answer_chars=args.answer_chars,
        calibration=args.calibration,
    )
