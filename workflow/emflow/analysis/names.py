"""The analysis's tables and figures by name, and where their captions are.

One list each, read by the rules (workflow/rules/analysis.smk: outputs and Snakemake's report), by
``emflow aggregate`` / ``figures`` (what they write) and by ``emflow report`` (what report.html shows). A table
``x`` is ``<tables>/x.csv``, a figure ``x`` is ``<figures>/x.png`` and ``x.pdf``.

Every caption is a file under workflow/report/, the one text both reports show: ``<figure>.rst``,
``table_<table>.rst`` and ``report_<section>.rst`` (report.html's own sections). Snakemake renders a caption as
reStructuredText through Jinja; report.html shows it as plain text (``caption_text``). A caption names a value
only as ``{{ snakemake.params.<key> }}``: the rule that writes the captioned file has that param (Snakemake fills
it in), and ``emflow report`` passes the same key to ``caption_text``.
"""

from __future__ import annotations

import re
from pathlib import Path

# Every table emflow aggregate writes, in the order it writes them.
TABLES = ("em", "em_by_cell", "per_question", "training", "training_steps", "lora_norms", "hypotheses", "definitions")
TABLES += ("judge_agreement",)  # the secondary judge against the primary one (only its header without one)
# The EM adapter's geometry over its saved steps (emflow.analysis.geometry): per module, per step, per run.
TABLES += ("adapter_geometry", "adapter_trajectory", "phase_transition")
# The persona proven active at training start, and the step-0 EM rate per persona beside no persona.
TABLES += ("persona_effect", "persona_step0")
# Every figure emflow figures draws, in report order.
FIGURES = (
    "em_trajectory",
    "em_by_seed",
    "coherence_trajectory",
    "loss_curves",
    "aligned_vs_coherent",
    "lora_norms",
    "domain_by_size",
    "em_by_question",
    "response_examples",
)
FIGURES += ("adapter_rotation", "adapter_pca")  # rotation beside the EM rate; the PCA path coloured by it
# The tables Snakemake's report shows (besides every figure's PNG).
REPORT_TABLES = ("hypotheses", "em_by_cell", "em", "per_question", "training", "lora_norms", "definitions")
REPORT_TABLES += ("judge_agreement",)
REPORT_TABLES += ("phase_transition", "adapter_trajectory")
REPORT_TABLES += ("persona_effect", "persona_step0")
# report.html's tables: (name, collapsed), in the order they appear.
HTML_TABLES = (
    ("hypotheses", False),
    ("em_by_cell", False),
    ("training", False),
    ("definitions", False),
    ("judge_agreement", False),
    ("em", True),
    ("per_question", True),
    ("lora_norms", True),
    ("training_steps", True),
)
HTML_TABLES += (("phase_transition", False), ("adapter_trajectory", True), ("adapter_geometry", True))
HTML_TABLES += (("persona_effect", False), ("persona_step0", False))

CAPTIONS_DIR = Path(__file__).resolve().parents[2] / "report"
PARAM_RE = re.compile(r"\{\{\s*snakemake\.params\.(\w+)\s*\}\}")
LITERAL_RE = re.compile(r"``(.+?)``")


def figure_caption(name: str) -> str:
    """The caption file of a figure, relative to workflow/report/."""
    return f"{name}.rst"


def table_caption(name: str) -> str:
    return f"table_{name}.rst"


def section_caption(name: str) -> str:
    """The caption of one of report.html's own sections (provenance, calibration, examples)."""
    return f"report_{name}.rst"


def caption_text(file: str, **values: object) -> str:
    """A caption file as one line of plain text, ``{{ snakemake.params.<key> }}`` filled from ``values``."""
    text = (CAPTIONS_DIR / file).read_text(encoding="utf-8")

    def fill(m: re.Match) -> str:
        if m[1] not in values:
            raise KeyError(f"caption {file} names snakemake.params.{m[1]}: pass {m[1]}=")
        return str(values[m[1]])

    text = PARAM_RE.sub(fill, text)
    if "{{" in text or "{%" in text:
        raise ValueError(f"caption {file}: only {{{{ snakemake.params.<key> }}}} can be filled into report.html")
    return LITERAL_RE.sub(r"\1", " ".join(line.strip() for line in text.splitlines() if line.strip()))
