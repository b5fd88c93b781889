"""``emflow aggregate``: judged answers and run folders in, every table of ``names.TABLES`` out.

Every table carries the run keys (base, persona, dataset, seed) parsed from the input paths
(``emflow.layout.parse_run_path``), so figures and the report never re-derive them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from emflow.analysis.agreement import agreement_table, load_secondary
from emflow.analysis.definitions import definitions_table, em_definitions
from emflow.analysis.geometry import geometry_tables
from emflow.analysis.hypotheses import hypotheses_table
from emflow.analysis.judgments import load_judgments
from emflow.analysis.names import TABLES
from emflow.analysis.persona import persona_tables
from emflow.analysis.rates import em_by_cell_table, em_table, per_question_table
from emflow.analysis.tables import write_table
from emflow.analysis.training import training_tables
from emflow.config.sections.analysis import Analysis

log = logging.getLogger(__name__)


def aggregate(
    *,
    judgments: list[str | Path],
    run_dirs: list[str | Path],
    out_dir: str | Path,
    analysis: Analysis,
    secondary: list[str | Path] = (),
) -> dict[str, Path]:
    """Write every table of ``TABLES`` as ``<out_dir>/<name>.csv``; returns name -> path.

    ``secondary``: the secondary judge's files (one per run), for judge_agreement.csv (only its header without).

    ``analysis`` is the validated config section; its figure and report settings are not read.
    """
    definitions = em_definitions(analysis.definitions)
    confidence, bootstrap = analysis.confidence, analysis.bootstrap
    answers, files = load_judgments(judgments)
    log.info("read %d answers from %d judgments files", len(answers), len(files))
    tables = {
        "em": em_table(answers, files, definitions, confidence),
        "em_by_cell": em_by_cell_table(answers, files, definitions, confidence, bootstrap),
        "per_question": per_question_table(answers, files, definitions, confidence, bootstrap),
        "hypotheses": hypotheses_table(
            answers, analysis.hypotheses, definitions, analysis.primary, confidence, bootstrap
        ),
        "definitions": definitions_table(definitions),
        "judge_agreement": agreement_table(answers, *load_secondary(secondary), definitions),
    }
    tables["training"], tables["training_steps"], tables["lora_norms"] = training_tables(run_dirs)
    log.info("read %d runs, %d checkpoints", len(tables["training"]), len(tables["lora_norms"]))
    tables.update(geometry_tables(run_dirs, tables["em"]))  # the saved adapters' geometry, beside the EM rate
    log.info("adapter geometry at %d saved steps", len(tables["adapter_trajectory"]))
    tables.update(persona_tables(run_dirs, tables["em_by_cell"]))  # the persona proven active; step-0 EM per persona

    out = {}
    for name in TABLES:
        out[name] = write_table(out_dir, name, tables[name])
        log.info("wrote %s (%d rows)", out[name], len(tables[name]))
    return out
