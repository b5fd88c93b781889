"""``emflow report``: one self-contained HTML page: provenance, judge calibration, figures (base64 PNG), tables and
example answers, each with its caption (``names``)."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import pandas as pd

from emflow.analysis.examples import example_answers, examples_html
from emflow.analysis.judgments import load_judgments
from emflow.analysis.names import FIGURES, HTML_TABLES, caption_text, figure_caption, section_caption, table_caption
from emflow.analysis.persona import step0_examples
from emflow.analysis.provenance import provenance_rows, redact_secrets
from emflow.analysis.tables import read_table
from emflow.errors import user_error
from emflow.io import atomic_write_text

log = logging.getLogger(__name__)

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


def _caption_html(file: str, **values: object) -> str:
    return f'<p class="caption">{html.escape(caption_text(file, **values))}</p>'


# report.html stays readable (and small) for a large grid: longer tables show their first rows and say where the
# whole table is (adapter_geometry.csv alone is runs × saved steps × LoRA modules rows).
HTML_MAX_ROWS = 500


def _table_html(df: pd.DataFrame, name: str) -> str:
    if df.empty:
        return "<p><em>(no rows)</em></p>"
    note = ""
    if len(df) > HTML_MAX_ROWS:
        whole = f"tables/{html.escape(name)}.csv"
        note = f"<p><em>First {HTML_MAX_ROWS} of {len(df)} rows: the whole table is {whole}.</em></p>"
        df = df.head(HTML_MAX_ROWS)
    return (
        note
        + '<div class="scroll">'
        + df.to_html(index=False, na_rep="—", border=0, escape=True, float_format=lambda x: f"{x:.4g}")
        + "</div>"
    )


def _figure_html(figures_dir: Path, name: str, definition: str) -> str:
    path = figures_dir / f"{name}.png"
    if not path.is_file():
        raise user_error(path, None, "missing", "run `emflow figures` and pass its --out-dir as --figures-dir")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = caption_text(figure_caption(name), definition=definition)
    return (
        f'<figure id="fig-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _tables_html(tables: dict[str, pd.DataFrame]) -> list[str]:
    parts = ['<h2 id="tables">Tables</h2>']
    for name, collapsed in HTML_TABLES:
        body = _caption_html(table_caption(name)) + _table_html(tables[name], name)
        title = f"{name}.csv ({len(tables[name])} rows)"
        if collapsed:
            summary = f"<summary><strong>{html.escape(title)}</strong></summary>"
            parts.append(f'<details id="tab-{name}">{summary}{body}</details>')
        else:
            parts.append(f'<section id="tab-{name}"><h3>{html.escape(title)}</h3>{body}</section>')
    return parts


def report_definition(provenance: dict, known: list[str]) -> str:
    """The EM definition the report shows: provenance ``definition``, else the one of ``em_definition`` (as the
    rule passes it: {name: thresholds}), else the tables' first; it must be one the tables hold."""
    definition = provenance.get("definition")
    em_definition = provenance.get("em_definition")
    if definition is None and isinstance(em_definition, dict) and len(em_definition) == 1:
        definition = next(iter(em_definition))
    definition = str(definition if definition is not None else (known[0] if known else "unknown"))
    if definition not in known:
        raise user_error(
            "--provenance", "definition", f"unknown definition {definition!r}", f"use one of {sorted(known)}"
        )
    return definition


def write_report(
    *,
    tables_dir: str | Path,
    figures_dir: str | Path,
    out_path: str | Path,
    provenance: dict,
    examples_per_cell: int,
    judgments: list[str | Path] = (),
    answer_chars: int = 600,
    calibration: str | Path | list[str | Path] | None = None,
) -> Path:
    """Write ``out_path`` (HTML, every asset inline) and return it. ``calibration``: the judge_calibration.csv
    of each judge (the primary's, and judge.secondary's), shown as one table."""
    if not isinstance(provenance, dict):
        raise user_error("--provenance", None, "must be a JSON object", "e.g. {experiment, config, definition}")
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    tables = {name: read_table(tables_dir, name) for name, _ in HTML_TABLES}
    known = list(tables["definitions"]["definition"]) if "definition" in tables["definitions"] else []
    definition = report_definition(provenance, known)
    experiment = str(provenance.get("experiment", "emflow"))

    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>emflow report: '
        f"{html.escape(experiment)}</title><style>{CSS}</style></head><body>",
        f"<h1>Emergent misalignment report: {html.escape(experiment)}</h1>",
    ]
    parts.append(f'<h2 id="provenance">Provenance</h2>{_caption_html(section_caption("provenance"))}<table><tbody>')
    for k, v in provenance_rows({**provenance, "definition": definition}, tables["em"], tables["definitions"]):
        parts.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>")
    parts.append("</tbody></table>")

    calibrations = [calibration] if isinstance(calibration, (str, Path)) else list(calibration or [])
    if calibrations:
        cal = pd.concat([pd.read_csv(path) for path in calibrations], ignore_index=True)
        parts.append(
            f'<h2 id="calibration">Judge calibration</h2>{_caption_html(section_caption("calibration"))}'
            f"{_table_html(cal, 'judge_calibration')}"
        )
    parts.append('<h2 id="figures">Figures</h2>')
    parts += [_figure_html(figures_dir, name, definition) for name in FIGURES]
    parts += _tables_html(tables)

    answers, _ = load_judgments(judgments)
    examples = example_answers(answers, tables["definitions"], definition, examples_per_cell, answer_chars)
    caption = _caption_html(section_caption("examples"), examples=examples_per_cell, definition=definition)
    parts.append(f'<h2 id="examples">Example responses</h2>{caption}')
    parts.append(f"<details open><summary>{len(examples)} answers</summary>{examples_html(examples)}</details>")
    step0 = step0_examples(examples, tables["persona_step0"])  # base + persona, before EM training
    caption = _caption_html(section_caption("step0"), definition=definition)
    parts.append(f'<h3 id="examples-step0">Step 0 per persona</h3>{caption}')
    parts.append(f"<details><summary>{len(step0)} step-0 answers</summary>{examples_html(step0)}</details>")
    parts.append("</body></html>\n")

    out_path = Path(out_path)
    atomic_write_text(out_path, redact_secrets("\n".join(parts)))
    log.info(
        "wrote %s (%d figures, %d tables, %d example answers)", out_path, len(FIGURES), len(HTML_TABLES), len(examples)
    )
    return out_path
