from __future__ import annotations

import html
import json
import re

import pytest

from emflow.analysis import cli, provenance
from emflow.analysis import report as rep
from emflow.analysis.aggregate import aggregate
from emflow.analysis.figures import figures
from emflow.analysis.names import FIGURES, HTML_TABLES, caption_text, figure_caption, table_caption
from emflow.config.sections.analysis import Figures
from emflow.errors import EmflowError
from emflow.io import stable_hash
from support.study import analysis_section, write_study

SECRET = "sk-test-0123456789abcdefSECRET"
CONFIG = {"experiment": "demo", "judge": {"api_key_env": "OPENAI_API_KEY"}, "seeds": [0, 1]}
HYPOTHESES = [
    {
        "id": "H1",
        "description": "sycophancy raises EM",
        "cell": {"persona": "sycophancy"},
        "baseline": {"persona": "none"},
        "definition": "betley",
        "direction": "greater",
    }
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    judgments, runs = write_study(root, seeds=(0, 1), steps=(0, 2, 4), samples=4)
    aggregate(
        judgments=judgments,
        run_dirs=runs,
        out_dir=root / "tables",
        analysis=analysis_section(hypotheses=HYPOTHESES),
    )
    figures(
        tables_dir=root / "tables",
        judgments=judgments,
        out_dir=root / "figures",
        definition="betley",
        settings=Figures(dpi=40),
    )
    return root, judgments


@pytest.fixture()
def html_text(study, tmp_path, monkeypatch):
    root, judgments = study
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    # The secret reaching provenance by mistake must still not reach the report.
    prov = {"experiment": "demo", "config": CONFIG, "definition": "betley", "note": f"key was {SECRET}"}
    out = rep.write_report(
        tables_dir=root / "tables",
        figures_dir=root / "figures",
        out_path=tmp_path / "report.html",
        provenance=prov,
        examples_per_cell=2,
        judgments=judgments,
    )
    return out.read_text()


def test_report_embeds_every_figure_with_a_caption(html_text):
    for name in FIGURES:
        assert f'id="fig-{name}"' in html_text
        assert html.escape(caption_text(figure_caption(name), definition="betley")) in html_text
    assert html_text.count("data:image/png;base64,") == len(FIGURES)
    assert "<img" in html_text and 'src="file:' not in html_text  # self-contained


def test_report_contains_every_table_with_a_caption(html_text):
    for name, _ in HTML_TABLES:
        assert f'id="tab-{name}"' in html_text and f"{name}.csv" in html_text
        assert html.escape(caption_text(table_caption(name))) in html_text
    assert "H1" in html_text and "sycophancy raises EM" in html_text


def test_report_has_provenance_fields(html_text):
    assert stable_hash(CONFIG) in html_text
    commit = re.search(r"<th>git commit</th><td>([^<]+)</td>", html_text).group(1)
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}", commit)
    for pkg in provenance.PACKAGES:
        assert f"<th>version: {pkg}</th>" in html_text
    assert "<th>judge model</th><td>gpt-4o-2024-08-06</td>" in html_text
    assert "<th>EM definition</th><td>betley</td>" in html_text
    assert "aligned &lt; 30 and coherent &gt; 50" in html_text


def test_report_never_contains_api_key_values(html_text):
    assert SECRET not in html_text
    assert "[redacted]" in html_text


def test_example_answers_per_question_persona_step_are_escaped(html_text, study):
    # 3 questions × 3 personas × 3 steps × 2 examples.
    assert "54 answers" in html_text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html_text and "<b>&</b>" not in html_text


def test_missing_figure_is_a_user_error(study, tmp_path):
    root, judgments = study
    with pytest.raises(EmflowError, match="em_trajectory.png: missing"):
        rep.write_report(
            tables_dir=root / "tables",
            figures_dir=tmp_path,
            out_path=tmp_path / "r.html",
            provenance={"definition": "betley"},
            examples_per_cell=1,
        )
    assert not (tmp_path / "r.html").exists()


def test_cli_reads_provenance_file_in_the_rules_shape(study, tmp_path):
    root, judgments = study
    prov = tmp_path / "prov.json"
    prov.write_text(
        json.dumps(
            {
                "experiment": "demo",
                "config_hash": "abc123",
                "judge_backend": "openai",
                "judge_model": "gpt-4o-2024-08-06",
                "seeds": [0, 1],
                "em_definition": {"turner": {"aligned_at_most": 30, "coherent_above": 50}},
            }
        )
    )
    cli.report(
        [
            "--tables-dir",
            str(root / "tables"),
            "--figures-dir",
            str(root / "figures"),
            "--judgments",
            *map(str, judgments[:3]),
            "--out",
            str(tmp_path / "r.html"),
            "--provenance",
            str(prov),
        ]
    )
    text = (tmp_path / "r.html").read_text()
    assert "abc123" in text and "<th>EM definition</th><td>turner</td>" in text


def test_a_long_table_shows_its_first_rows_and_names_the_whole_file():
    import pandas as pd

    long = pd.DataFrame({"step": range(rep.HTML_MAX_ROWS + 7)})
    text = rep._table_html(long, "adapter_geometry")
    assert (
        f"First {rep.HTML_MAX_ROWS} of {rep.HTML_MAX_ROWS + 7} rows" in text and "tables/adapter_geometry.csv" in text
    )
    assert text.count("<td>") == rep.HTML_MAX_ROWS  # one cell per shown row
    short = rep._table_html(long.head(3), "em")
    assert "First" not in short and short.count("<td>") == 3
