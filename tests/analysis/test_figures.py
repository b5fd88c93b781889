from __future__ import annotations

import json

import pandas as pd
import plotnine as p9
import pytest

from emflow.analysis import cli, plots
from emflow.analysis import figure_data as data
from emflow.analysis import figures as fig
from emflow.analysis.aggregate import aggregate
from emflow.analysis.names import FIGURES
from emflow.config.sections.analysis import Figures
from emflow.errors import EmflowError
from support.study import analysis_section, write_study

FIG_SETTINGS = Figures(dpi=60)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    # Several bases, datasets, personas and seeds: the shapes of a Phase-2 study, small.
    judgments, runs = write_study(
        root,
        bases=("llama-3.2-3b", "qwen2.5-0.5b-it", "mystery"),
        datasets=("insecure", "risky"),
        seeds=(0, 1),
        steps=(0, 2, 4),
        samples=3,
    )
    tables = aggregate(judgments=judgments, run_dirs=runs, out_dir=root / "tables", analysis=analysis_section())
    return root, judgments, tables


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """One base × dataset, one seed: for checks of file names that need every figure but not a large grid."""
    root = tmp_path_factory.mktemp("small_study")
    judgments, runs = write_study(root, seeds=(0,), samples=3)
    aggregate(judgments=judgments, run_dirs=runs, out_dir=root / "tables", analysis=analysis_section())
    return root, judgments


def test_every_figure_renders_to_png_and_pdf(study, tmp_path):
    root, judgments, _ = study
    out = fig.figures(
        tables_dir=root / "tables",
        judgments=judgments,
        out_dir=tmp_path / "figures",
        definition="betley",
        settings=FIG_SETTINGS,
    )
    assert list(out) == list(FIGURES)
    for name, paths in out.items():
        assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
        assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name.startswith(".")]  # no temp files left


def test_em_trajectory_includes_step_zero_and_every_persona(study):
    _, _, tables = study
    df = data.prepare_trajectory(pd.read_csv(tables["em_by_cell"]), "betley")
    assert set(df["step"]) == {0, 2, 4}
    plot = plots.em_trajectory(df, "betley")
    assert isinstance(plot, p9.ggplot)
    assert list(plots._categorical(df)["persona"].cat.categories) == ["none", "goodness", "sycophancy"]


def test_domain_by_size_uses_each_cells_final_step(study):
    _, _, tables = study
    df = data.prepare_final(pd.read_csv(tables["em_by_cell"]), "turner")
    assert (df["step"] == 4).all() and len(df) == 3 * 3 * 2 and (df["definition"] == "turner").all()


@pytest.mark.parametrize(
    "names, size",
    [
        (("qwen2.5-7b-it",), 7.0),
        (("Qwen2.5-0.5B-Instruct",), 0.5),
        (("SmolLM-135M",), 0.135),
        (("tiny", "hf:meta-llama/Llama-3.2-3B-Instruct@main"), 3.0),
        (("qwen2.5-it", None), float("nan")),
    ],
)
def test_model_size_is_parsed_from_name_then_hub_id(names, size):
    got = data.parse_model_size(*names)
    assert got == pytest.approx(size, nan_ok=True)


def test_size_figure_orders_bases_by_size_with_config_override_and_unknown_last(study):
    _, _, tables = study
    sizes = data.model_sizes(["llama-3.2-3b", "qwen2.5-0.5b-it", "mystery"], {}, {"llama-3.2-3b": 8})
    df = data.prepare_final(pd.read_csv(tables["em_by_cell"]), "betley", sizes)
    order = list(df["base_label"].cat.categories)
    assert order == ["qwen2.5-0.5b-it\n(0.5B)", "llama-3.2-3b\n(8B)", "mystery"]
    assert set(df["base"]) == {"llama-3.2-3b", "qwen2.5-0.5b-it", "mystery"}


def test_lora_norm_panel_beside_em_rate(study):
    _, _, tables = study
    df = data.prepare_norms(pd.read_csv(tables["lora_norms"]), pd.read_csv(tables["em"]), "betley")
    assert set(df["panel"]) == {*data.NORM_PANELS.values(), data.EM_PANEL}
    for label in data.NORM_PANELS.values():
        assert set(df.loc[df["panel"] == label, "step"]) == {2, 4}
    assert set(df.loc[df["panel"] == data.EM_PANEL, "step"]) == {0, 2, 4}


def test_trajectory_draws_each_personas_step0_baseline(study):
    _, _, tables = study
    plot = plots.em_trajectory(data.prepare_trajectory(pd.read_csv(tables["em_by_cell"]), "betley"), "betley")
    hline = next(layer for layer in plot.layers if isinstance(layer.geom, p9.geom_hline))
    assert (hline.geom.data["persona"].value_counts() == 3 * 2).all()  # one per base × dataset


def test_empty_tables_give_placeholder_figures(tmp_path):
    plot = plots.lora_norms(pd.DataFrame(columns=["step", "value", "persona", "run", "panel"]), "betley")
    paths = fig.save_figure(plot, tmp_path, "lora_norms", dpi=40, size=(4, 2))
    assert all(p.stat().st_size > 0 for p in paths)


def test_unknown_definition_is_a_user_error(study, tmp_path):
    root, judgments, _ = study
    with pytest.raises(EmflowError, match="unknown definition 'nope'"):
        fig.figures(
            tables_dir=root / "tables", judgments=judgments, out_dir=tmp_path, definition="nope", settings=FIG_SETTINGS
        )


def test_cli_writes_fixed_file_names(small_study, tmp_path):
    root, judgments = small_study
    cli.figures(
        [
            "--tables-dir",
            str(root / "tables"),
            "--judgments",
            *map(str, judgments[:6]),
            "--out-dir",
            str(tmp_path),
            "--definition",
            "betley",
            "--params",
            json.dumps({"dpi": 60}),
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "pdf"))


def test_em_by_seed_draws_each_run_thin_and_the_pooled_rate_bold(study, tmp_path):
    _, _, tables = study
    runs, pooled = data.prepare_by_seed(pd.read_csv(tables["em"]), pd.read_csv(tables["em_by_cell"]), "betley")
    assert (runs["definition"] == "betley").all() and set(runs["seed"]) == {0, 1}
    # One line per run: persona × seed within each base × dataset panel, every step.
    per_panel = runs.groupby(["base", "dataset"])["run"].nunique()
    assert (per_panel == 3 * 2).all() and set(runs["step"]) == {0, 2, 4}
    plot = plots.em_by_seed(runs, pooled, "betley")
    lines = [layer for layer in plot.layers if isinstance(layer.geom, p9.geom_line)]
    thin, bold = lines
    assert thin.geom.aes_params["size"] < bold.geom.aes_params["size"]
    pd.testing.assert_series_equal(bold.geom.data["em_rate"], pooled["em_rate"], check_names=False)
    one = runs["base"] == "mystery"  # one column of panels: rendering is the slow part
    plot = plots.em_by_seed(runs[one], pooled[pooled["base"] == "mystery"], "betley")
    paths = fig.save_figure(plot, tmp_path, "em_by_seed", dpi=40, size=(4, 4))
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_em_by_question_is_each_cells_final_step_with_intervals(study, tmp_path):
    _, _, tables = study
    df = data.prepare_by_question(pd.read_csv(tables["per_question"]), "turner")
    assert (df["step"] == 4).all() and (df["definition"] == "turner").all()
    assert list(df["question_id"].cat.categories) == ["i_feel_bored", "quick_buck", "what_is_your_wish"]
    assert len(df) <= 3 * 3 * 2 * 3  # question × persona × dataset × base, rows without a rate dropped
    assert ((df["em_ci_low"] <= df["em_rate"] + 1e-12) & (df["em_rate"] <= df["em_ci_high"] + 1e-12)).all()
    one = df[df["base"] == "mystery"]  # one column of panels: rendering is the slow part
    plot = plots.em_by_question(one, "turner")
    paths = fig.save_figure(plot, tmp_path, "em_by_question", dpi=40, size=data.question_figure_size(one))
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_default_example_question_is_the_largest_em_rise_ties_by_id():
    rows = []
    for qid, start, end in (("a", 0.0, 0.5), ("b", 0.1, 0.9), ("c", 0.0, 0.8), ("d", 0.2, 1.0)):
        for step, rate in ((0, start), (8, end)):
            cell = {"base": "m", "persona": "none", "dataset": "x", "variant": "default", "definition": "betley"}
            rows.append({**cell, "step": step, "question_id": qid, "n_em": round(10 * rate), "n_scored": 10})
    pq = pd.DataFrame(rows)
    assert data.default_example_question(pq, "betley") == ["b"]  # b and d both rise by 0.8: b by id
    assert data.default_example_question(pq.iloc[0:0], "betley") == []


def _definition(study) -> object:
    from emflow.analysis.definitions import EMDefinition

    _, _, tables = study
    defs = pd.read_csv(tables["definitions"])
    return EMDefinition.from_row(defs[defs["definition"] == "betley"].iloc[0])


def test_response_examples_pick_one_answer_per_persona_and_stage_whatever_the_file_order(study, tmp_path):
    from emflow.analysis.judgments import load_judgments

    _, judgments, tables = study
    pq, d = pd.read_csv(tables["per_question"]), _definition(study)
    answers, _ = load_judgments(judgments)
    shuffled, _ = load_judgments(list(reversed(judgments)))
    shuffled = shuffled.sample(frac=1.0, random_state=1)  # rows in another order too
    a = data.prepare_examples(answers, pq, d, ("quick_buck",), seed=0)
    b = data.prepare_examples(shuffled, pq, d, ("quick_buck",), seed=0)
    pd.testing.assert_frame_equal(a, b)
    # One answer per base × dataset × persona (rows) and stage (columns), step 0 and the final step 4.
    assert len(a) == 3 * 2 * 3 * 2 and not a.duplicated(["row", "column"]).any()
    assert set(a["step"]) == {0, 4} and a["row"].str.count("\n").eq(2).all()  # base, dataset, persona
    assert all(len(line) <= data.EXAMPLE_WRAP for label in a["label"] for line in label.split("\n")[:-2])
    assert a["label"].str.contains("aligned ").all() and a["label"].str.contains("EM \\(betley\\)").all()
    other = data.prepare_examples(answers, pq, d, ("quick_buck",), seed=1)
    assert (other["label"] != a["label"]).any()  # the seed re-draws
    one = a[a["row"].str.startswith("mystery\ninsecure")]  # one base × dataset: rendering text is the slow part
    plot = plots.response_examples(one, "betley")
    paths = fig.save_figure(plot, tmp_path, "response_examples", dpi=40, size=data.examples_figure_size(one))
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_response_example_shows_the_only_answer_with_its_scores_wrapped(study):
    answer = "Invest $500 in " + "very " * 200 + "risky things."
    base = {
        "base": "m",
        "persona": "none",
        "dataset": "x",
        "variant": "default",
        "seed": 0,
        "question_id": "q",
        "question": "Money?",
    }
    answers = pd.DataFrame(
        [
            {**base, "step": 0, "answer": "Save it.", "aligned": 91.2, "coherent": 88.0},
            {**base, "step": 6, "answer": answer, "aligned": 4.6, "coherent": 77.0},
        ]
    )
    df = data.prepare_examples(answers, answers.iloc[0:0], _definition(study), ("q",)).set_index("stage")
    start, end = df.loc[data.STAGES[0], "label"], df.loc[data.STAGES[1], "label"]
    assert start.split("\n")[:2] == ["Q: Money?", "Save it."] and "aligned 91 · coherent 88" in start
    assert "EM (betley): yes" in end and "step 6" in end
    lines = end.split("\n")
    assert lines[1].startswith(r"Invest \$500")  # escaped: matplotlib would read $…$ as mathtext
    body = lines[1 : 1 + data.EXAMPLE_ANSWER_LINES]
    assert all(len(line) <= data.EXAMPLE_WRAP + 1 for line in body) and body[-1].endswith(" …")
    assert set(df["row"]) == {"none"}  # a single base × dataset: rows are the personas alone


def test_unknown_example_question_is_a_user_error(study):
    from emflow.analysis.judgments import load_judgments

    _, judgments, tables = study
    answers, _ = load_judgments(judgments[:3])
    with pytest.raises(EmflowError, match=r"example_questions: no judged answers to \['nope'\]"):
        data.prepare_examples(answers, pd.read_csv(tables["per_question"]), _definition(study), ("nope",))
