"""persona_effect.csv and persona_step0.csv from run folders and judgments on disk, and their place in report.html."""

from __future__ import annotations

import html
import json
import math
import shutil

import pandas as pd
import pytest

from emflow.analysis import report as rep
from emflow.analysis.aggregate import aggregate
from emflow.analysis.examples import example_answers
from emflow.analysis.names import FIGURES, caption_text, section_caption
from emflow.analysis.persona import PERSONA_EFFECT_COLUMNS, PERSONA_STEP0_COLUMNS, step0_examples
from emflow.layout import parse_run_path
from support.study import analysis_section, write_study

SPECS = {"none": None, "sycophancy": "hf:maius/personas@abc/sycophancy", "goodness": "hf:maius/personas@abc/goodness"}


def effect(persona: str, seed: int) -> dict:
    """A summary's persona_effect as emflow.train.persona_check writes it (numbers made up per run)."""
    base = 2.0 + 0.01 * seed
    if SPECS[persona] is None:
        return {"rows": 16, "tokens": 400, "min_change": 1e-4, "persona": None, "persona_mode": None,
                "loss_base": base, "loss_persona": None, "loss_stacked": base, "max_change_persona": None,
                "max_change_stacked": 0.0, "max_change_stacked_vs_persona": None, "persona_active": None}  # fmt: skip
    shift = 0.3 if persona == "sycophancy" else -0.2
    return {"rows": 16, "tokens": 400, "min_change": 1e-4, "persona": SPECS[persona], "persona_mode": "stacked",
            "loss_base": base, "loss_persona": base + shift, "loss_stacked": base + shift, "max_change_persona": 1.5,
            "max_change_stacked": 1.5, "max_change_stacked_vs_persona": 0.0, "persona_active": True}  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("persona_study")
    judgments, runs = write_study(root, seeds=(0, 1), steps=(0, 2, 4), samples=4)
    for run in runs:
        keys = parse_run_path(run)
        summary = json.loads((run / "summary.json").read_text())
        spec = SPECS[keys["persona"]]
        summary.update(
            persona=None if spec is None else f"/snapshots/{keys['persona']}",
            persona_spec=spec,
            persona_mode="stacked",
            persona_effect=effect(keys["persona"], keys["seed"]),
            persona_check_after_resume={"result": "passed" if keys["seed"] == 1 else "not resumed"},
        )
        (run / "summary.json").write_text(json.dumps(summary))
    out = aggregate(judgments=judgments, run_dirs=runs, out_dir=root / "tables", analysis=analysis_section())
    return root, judgments, runs, out


def test_persona_effect_has_one_row_per_run_from_its_summary(study):
    _, _, runs, out = study
    df = pd.read_csv(out["persona_effect"])
    assert list(df.columns) == PERSONA_EFFECT_COLUMNS and len(df) == len(runs) == 6
    by = df.set_index(["persona", "seed"])
    for persona, seed in by.index:
        row, want = by.loc[(persona, seed)], effect(persona, seed)
        assert row["loss_base"] == pytest.approx(want["loss_base"])
        assert row["check_after_resume"] == ("passed" if seed == 1 else "not resumed")
        if persona == "none":  # persona columns empty
            assert pd.isna(row["persona_adapter"]) and pd.isna(row["loss_persona"]) and pd.isna(row["persona_active"])
        else:
            assert row["persona_adapter"] == SPECS[persona] and row["persona_active"] in (True, "True")
            assert row["loss_persona"] == pytest.approx(want["loss_persona"]) != row["loss_base"]
            assert row["loss_stacked"] == row["loss_persona"] and row["variant"] == "default"


def test_persona_step0_puts_each_persona_beside_no_persona(study):
    _, _, _, out = study
    step0, cells = pd.read_csv(out["persona_step0"]), pd.read_csv(out["em_by_cell"])
    assert list(step0.columns) == PERSONA_STEP0_COLUMNS
    assert len(step0) == 3 * 2  # 3 personas × 2 definitions, step 0 only
    at0 = cells[cells["step"] == 0].set_index(["persona", "definition"])
    for r in step0.itertuples():
        assert r.em_rate == at0.loc[(r.persona, r.definition), "em_rate"]
        assert r.em_ci_low == at0.loc[(r.persona, r.definition), "em_ci_low"]
        if r.persona == "none":
            assert not r.has_persona and pd.isna(r.no_persona) and math.isnan(r.no_persona_em_rate)
        else:
            assert r.has_persona and r.no_persona == "none"
            assert r.no_persona_em_rate == at0.loc[("none", r.definition), "em_rate"]
            assert r.no_persona_em_ci_high == at0.loc[("none", r.definition), "em_ci_high"]


def test_a_run_trained_before_the_check_has_empty_measurements(study, tmp_path):
    root, judgments, runs, _ = study
    shutil.copytree(root / "results", tmp_path / "results")
    runs = [tmp_path / run.relative_to(root) for run in runs]
    old = runs[0]
    summary = json.loads((old / "summary.json").read_text())
    for key in ("persona_effect", "persona_check_after_resume", "persona"):
        summary.pop(key)
    (old / "summary.json").write_text(json.dumps(summary))
    out = aggregate(judgments=judgments, run_dirs=runs, out_dir=tmp_path / "tables", analysis=analysis_section())
    df = pd.read_csv(out["persona_effect"])
    keys = parse_run_path(old)
    row = df[(df["persona"] == keys["persona"]) & (df["seed"] == keys["seed"])].iloc[0]
    assert pd.isna(row["loss_base"]) and pd.isna(row["check_after_resume"])
    # Whether that persona is "no persona" is unknown now: no cell is put beside it.
    step0 = pd.read_csv(out["persona_step0"])
    assert step0.loc[step0["persona"] == keys["persona"], "has_persona"].isna().all()


def test_report_shows_the_persona_tables_and_step0_answers_beside_no_persona(study, tmp_path):
    from emflow.analysis.judgments import load_judgments

    root, judgments, _, _ = study
    (tmp_path / "figures").mkdir()
    for name in FIGURES:  # the figures themselves are test_report's: any PNG file stands in for them here
        (tmp_path / "figures" / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    text = rep.write_report(
        tables_dir=root / "tables",
        figures_dir=tmp_path / "figures",
        out_path=tmp_path / "report.html",
        provenance={"definition": "betley"},
        examples_per_cell=1,
        judgments=judgments,
    ).read_text()
    assert 'id="tab-persona_effect"' in text and 'id="tab-persona_step0"' in text
    assert (
        'id="examples-step0"' in text
        and html.escape(caption_text(section_caption("step0"), definition="betley")) in text
    )
    # 3 questions × 3 personas at step 0, one example each; per question the no-persona answer first.
    answers, _ = load_judgments(judgments)
    definitions = pd.read_csv(root / "tables" / "definitions.csv")
    step0 = step0_examples(
        example_answers(answers, definitions, "betley", 1, 600), pd.read_csv(root / "tables" / "persona_step0.csv")
    )
    assert "9 step-0 answers" in text and len(step0) == 9 and set(step0["step"]) == {0}
    for _, per_question in step0.groupby("question_id", sort=False):
        assert list(per_question["persona"]) == ["none", "goodness", "sycophancy"]
