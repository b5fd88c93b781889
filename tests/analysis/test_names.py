"""Table and figure names and their captions: one caption file per name, which Snakemake's report renders
(Jinja, then reStructuredText) and report.html shows as plain text."""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
import pytest
from docutils.core import publish_parts

from emflow.analysis import names
from emflow.config.files import load_config_files
from support.paths import ROOT

CAPTIONED = (
    [names.figure_caption(n) for n in names.FIGURES]
    + [names.table_caption(n) for n in {*names.REPORT_TABLES, *(n for n, _ in names.HTML_TABLES)}]
    + [names.section_caption(n) for n in ("provenance", "calibration", "examples", "step0")]
)


def test_every_table_the_reports_show_is_one_aggregate_writes():
    assert set(names.REPORT_TABLES) <= set(names.TABLES)
    assert sorted(n for n, _ in names.HTML_TABLES) == sorted(names.TABLES)
    assert len(set(names.FIGURES)) == len(names.FIGURES)


@pytest.mark.parametrize("file", sorted(CAPTIONED))
def test_caption_renders_for_snakemake_and_for_report_html(file):
    text = (names.CAPTIONS_DIR / file).read_text()
    # As Snakemake renders it: Jinja with the job's params and the config, then reStructuredText (strictly here).
    config = load_config_files([ROOT / "config.yaml"])
    params = SimpleNamespace(definition="betley", examples=3)
    snakemake = SimpleNamespace(params=params, config=config)
    rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(snakemake=snakemake)
    assert "betley" in rendered or "{{" not in text
    publish_parts(rendered, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})
    plain = names.caption_text(file, definition="betley", examples=3)
    assert "\n" not in plain and "{{" not in plain and "``" not in plain and plain.endswith(".")


def test_caption_text_fills_params_and_names_a_missing_one():
    assert "(betley)" in names.caption_text(names.figure_caption("em_trajectory"), definition="betley")
    with pytest.raises(KeyError, match="snakemake.params.definition"):
        names.caption_text(names.figure_caption("em_trajectory"))
