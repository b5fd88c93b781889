"""The adapter geometry on saved adapters whose answer is known: a rank-1 B rotated by a known angle at a known step,
a rank-3 update whose top singular direction rotates (and whose sign flips without changing ΔW), a straight-line
trajectory (one principal component), and the phase-transition table beside a known EM rise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emflow.analysis.aggregate import aggregate
from emflow.analysis.geometry import (
    DIRECTION_B,
    DIRECTION_SVD,
    geometry_tables,
    module_geometry,
    pca_coordinates,
    run_geometry,
)
from emflow.analysis.names import TABLES
from emflow.errors import EmflowError
from emflow.layout import checkpoint_dir, geometry_checkpoint_dir
from support.study import analysis_section, write_study

MODULES = ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.1.mlp.down_proj")
RUN = "results/e/runs/tiny/none/risky/default/seed0"
KEYS = {"base": "tiny", "persona": "none", "dataset": "risky", "variant": "default", "seed": 0}


def _save(folder: Path, modules: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, (a, b) in modules.items():
        tensors[f"{name}.lora_A.weight"] = torch.tensor(a, dtype=torch.float32)
        tensors[f"{name}.lora_B.weight"] = torch.tensor(b, dtype=torch.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def _write_run(root: Path, adapters: dict[int, dict], evaluated: set[int]) -> Path:
    """Saved adapters at their steps: evaluated ones as checkpoints, the others as geometry-only saves."""
    run = root / RUN
    for step, modules in adapters.items():
        where = checkpoint_dir if step in evaluated else geometry_checkpoint_dir
        _save(Path(where(run, step)), modules)
    return run


def _rotation(theta: float, dim: int = 6) -> np.ndarray:
    """Unit vector at angle ``theta`` from e0 in the (e0, e1) plane."""
    v = np.zeros(dim)
    v[0], v[1] = math.cos(theta), math.sin(theta)
    return v


ANGLE = math.radians(40)
STEPS = (2, 4, 6, 8, 10, 12)
EVALUATED = {4, 8, 12}
TURN = 6  # B turns by ANGLE between step 4 and step 6


def _rank1_run(root: Path) -> Path:
    a = np.array([[0.5, -1.0, 2.0, 0.0]])  # fixed A (1 × 4)
    adapters = {s: {m: (a, (s * _rotation(ANGLE if s >= TURN else 0.0))[:, None]) for m in MODULES} for s in STEPS}
    return _write_run(root, adapters, EVALUATED)


def test_rank1_rotation_by_a_known_angle_at_a_known_step(tmp_path):
    rows, traj = run_geometry(_rank1_run(tmp_path), KEYS)
    geo = pd.DataFrame(rows)
    assert len(geo) == len(STEPS) * len(MODULES) and (geo["direction"] == DIRECTION_B).all()
    assert (geo["rank"] == 1).all()
    assert geo.groupby("step")["evaluated"].first().to_dict() == {s: s in EVALUATED for s in STEPS}
    for s, g in geo.groupby("step"):
        assert g["norm_B"].to_numpy() == pytest.approx(s)
        assert g["norm_A"].to_numpy() == pytest.approx(math.sqrt(5.25))
        assert g["norm_BA"].to_numpy() == pytest.approx(s * math.sqrt(5.25))
        expected_prev = math.nan if s == STEPS[0] else (math.cos(ANGLE) if s == TURN else 1.0)
        assert g["cos_prev"].to_numpy() == pytest.approx(expected_prev, nan_ok=True)
        assert g["cos_final"].to_numpy() == pytest.approx(math.cos(ANGLE) if s < TURN else 1.0)
    t = pd.DataFrame(traj).set_index("step")
    assert t.loc[TURN, "rotation_deg"] == pytest.approx(40.0)
    assert t.loc[TURN, "rotation_deg_per_step"] == pytest.approx(20.0)  # 40 degrees over 2 optimizer steps
    assert t.drop(index=[STEPS[0], TURN])["rotation_deg"].to_numpy() == pytest.approx(0.0, abs=1e-3)
    assert t["rotation_deg_per_step"].idxmax() == TURN
    assert (t["n_modules"] == 2).all() and t.loc[12, "norm_B"] == pytest.approx(2 * 12)  # summed over modules


def test_phase_transition_puts_the_rotation_beside_the_largest_em_rise(tmp_path):
    run = _rank1_run(tmp_path)
    em = pd.DataFrame(
        [
            {**KEYS, "step": s, "definition": d, "em_rate": r}
            for d, rates in (("betley", (0.0, 0.05, 0.5, 0.6)), ("turner", (0.0, 0.4, 0.45, 0.5)))
            for s, r in zip((0, 4, 8, 12), rates, strict=True)
        ]
    )
    phase = geometry_tables([run], em)["phase_transition"].set_index("definition")
    assert (phase["rotation_step"] == TURN).all() and (phase["rotation_from_step"] == 4).all()
    assert phase.loc["betley", "em_rise_step"] == 8 and phase.loc["betley", "em_rise_from_step"] == 4
    assert phase.loc["betley", "em_rise"] == pytest.approx(0.45)
    assert bool(phase.loc["betley", "rotation_in_em_rise"]) is True  # 4 < 6 <= 8
    assert phase.loc["turner", "em_rise_step"] == 4  # EM rose most before B turned
    assert bool(phase.loc["turner", "rotation_in_em_rise"]) is False
    assert (phase["saved_steps"] == len(STEPS)).all()


def _orthonormal(n: int, k: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, k)))
    return q


def test_rank3_top_singular_direction_rotates_and_its_sign_is_ignored(tmp_path):
    out_dim, in_dim, rank = 8, 5, 3
    v = _orthonormal(in_dim, rank, 0)  # A = Vᵀ: orthonormal rows, so ΔW = Σ σ_i u_i v_iᵀ exactly
    sigma = np.array([3.0, 1.0, 0.5])
    adapters = {}
    for s in STEPS:
        u = np.zeros((out_dim, rank))
        u[:, 0] = _rotation(ANGLE if s >= TURN else 0.0, out_dim)  # in the (e0, e1) plane
        u[2, 1] = u[3, 2] = 1.0  # u2 = e2, u3 = e3: orthogonal to the plane
        a, b = v.T.copy(), u * sigma * (s / 12)
        if s == 10:  # flip u1 and v1 together: ΔW unchanged, the singular vector's sign is arbitrary
            a[0], b[:, 0] = -a[0], -b[:, 0]
        adapters[s] = {MODULES[0]: (a, b)}
    rows, traj = run_geometry(_write_run(tmp_path, adapters, EVALUATED), KEYS)
    geo = pd.DataFrame(rows).set_index("step")
    assert (geo["direction"] == DIRECTION_SVD).all() and (geo["rank"] == rank).all()
    assert geo.loc[TURN, "cos_prev"] == pytest.approx(math.cos(ANGLE))
    assert geo.loc[10, "cos_prev"] == pytest.approx(1.0) and geo.loc[12, "cos_prev"] == pytest.approx(1.0)
    assert geo.loc[2, "cos_final"] == pytest.approx(math.cos(ANGLE))
    assert geo.loc[12, "norm_BA"] == pytest.approx(float(np.linalg.norm(sigma)), rel=1e-6)
    assert geo.loc[12, "top_share"] == pytest.approx(9.0 / float(np.sum(sigma**2)), rel=1e-6)
    assert pd.DataFrame(traj).set_index("step")["rotation_deg_per_step"].idxmax() == TURN


@pytest.mark.parametrize("dead_column", [False, True])  # True: B of rank 3 < r (a LoRA column still at zero)
def test_module_geometry_matches_a_dense_svd(dead_column):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(20, 4))
    if dead_column:
        b[:, 2] = 0.0
    g = module_geometry(a, b)
    u, s, _ = np.linalg.svd(b @ a)
    assert g["norm_A"] == pytest.approx(float(np.linalg.norm(a))) and g["norm_B"] == pytest.approx(np.linalg.norm(b))
    assert g["norm_BA"] == pytest.approx(float(np.linalg.norm(b @ a)))
    assert abs(float(g["unit"] @ u[:, 0])) == pytest.approx(1.0)
    assert g["top_share"] == pytest.approx(s[0] ** 2 / np.sum(s**2))


def test_pca_of_a_straight_line_is_one_component(tmp_path):
    a = np.array([[1.0, 2.0, 0.0, -1.0]])
    b = np.array([[1.0], [0.0], [2.0], [0.5], [0.0], [1.0]])
    adapters = {s: {m: (a, s * b) for m in MODULES} for s in STEPS}  # A fixed, B grows: a line in weight space
    _, traj = run_geometry(_write_run(tmp_path, adapters, EVALUATED), KEYS)
    t = pd.DataFrame(traj)
    assert t["pc1_explained"].iloc[0] == pytest.approx(1.0, abs=1e-9)
    assert np.diff(t["pc1"]).min() > 0  # the line is walked in step order, towards the final adapter
    assert t["pc2"].abs().max() == pytest.approx(0.0, abs=1e-6)
    span = (STEPS[-1] - STEPS[0]) * math.sqrt(len(MODULES)) * float(np.linalg.norm(b))
    assert t["pc1"].iloc[-1] - t["pc1"].iloc[0] == pytest.approx(span)


def test_pca_from_the_gram_matrix_matches_pca_of_the_points():
    x = np.random.default_rng(2).normal(size=(7, 50))
    scores, explained = pca_coordinates(x @ x.T)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    ref = u[:, :2] * s[:2]
    assert np.abs(scores) == pytest.approx(np.abs(ref))
    assert explained == pytest.approx(s[:2] ** 2 / np.sum(s**2))


def test_a_save_with_other_modules_is_one_line_naming_the_file(tmp_path):
    a, b = np.ones((1, 4)), np.ones((6, 1))
    run = _write_run(tmp_path, {4: {MODULES[0]: (a, b)}, 8: {m: (a, b) for m in MODULES}}, {8})
    with pytest.raises(EmflowError, match=r"geometry/checkpoint-4.*other LoRA modules"):
        run_geometry(run, KEYS)


def test_aggregate_writes_the_geometry_tables(tmp_path):
    judgments, runs = write_study(tmp_path, personas=("none",), seeds=(0,), steps=(0, 2, 4), samples=2)
    out = aggregate(judgments=judgments, run_dirs=runs, out_dir=tmp_path / "t", analysis=analysis_section())
    assert {"adapter_geometry", "adapter_trajectory", "phase_transition"} <= set(TABLES) <= set(out)
    traj = pd.read_csv(out["adapter_trajectory"])
    assert traj["step"].tolist() == [2, 4] and traj["evaluated"].all()
    # The fixture scales one B per seed: no rotation, and the trajectory is a line.
    assert traj["cos_prev"].iloc[1] == pytest.approx(1.0) and traj["pc1_explained"].iloc[0] == pytest.approx(1.0)
    assert len(pd.read_csv(out["adapter_geometry"])) == 2 * 2
    assert set(pd.read_csv(out["phase_transition"])["definition"]) == {"betley", "turner"}


def test_geometry_figures_render_from_the_tables_and_when_empty(tmp_path):
    from emflow.analysis import geometry_plots as gp
    from emflow.analysis.figures import save_figure

    run = _rank1_run(tmp_path)
    em = pd.DataFrame(
        [
            {**KEYS, "step": s, "definition": "betley", "em_rate": r}
            for s, r in zip((0, 4, 8, 12), (0, 0.1, 0.5, 0.6), strict=True)
        ]
    )
    traj = geometry_tables([run], em)["adapter_trajectory"]
    rotation = gp.prepare_rotation(traj, em, "betley")
    assert rotation.loc[rotation["largest"], "step"].unique().tolist() == [TURN]
    assert set(rotation["panel"]) == {gp.EM_PANEL, gp.ROTATION_PANEL}
    assert (rotation["panel"] == gp.EM_PANEL).sum() == 4  # step 0 too: the EM rate before training
    pca = gp.prepare_pca(traj, em, "betley")
    assert pca["em_rate"].notna().tolist() == [s in EVALUATED for s in STEPS]
    for name, plot in (
        ("adapter_rotation", gp.adapter_rotation(rotation, "betley")),
        ("adapter_pca", gp.adapter_pca(pca, "betley")),
    ):
        assert all(p.stat().st_size > 1000 for p in save_figure(plot, tmp_path / "f", name, dpi=40, size=(5, 4)))
    empty = traj.iloc[0:0]
    for name, plot in (
        ("adapter_rotation", gp.adapter_rotation(gp.prepare_rotation(empty, em, "betley"), "betley")),
        ("adapter_pca", gp.adapter_pca(gp.prepare_pca(empty, em, "betley"), "betley")),
    ):
        assert save_figure(plot, tmp_path / "empty", name, dpi=40, size=(4, 2))[0].is_file()


def test_a_zero_update_has_no_direction():
    zero = module_geometry(np.ones((3, 5)), np.zeros((4, 3)))
    assert zero["norm_BA"] == 0.0 and np.isnan(zero["unit"]).all() and math.isnan(zero["top_share"])
