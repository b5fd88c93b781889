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


def test_cli_writes_fixed_file_names(study, tmp_path):
    root, judgments, _ = study
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
