"""The EM adapter's geometry over training: norms, rotation and PCA of the saved LoRA weights, beside the EM rate
(adapter_geometry.csv, adapter_trajectory.csv, phase_transition.csv).

Read from the saved ``adapter_model.safetensors`` files alone (no model is loaded), at every step a run saved: its
evaluated checkpoints and the geometry-only saves of ``checkpoints.analysis_every`` (emflow.analysis.norms
.saved_adapters). Per LoRA module (ΔW = B·A, B is out × r, A is r × in):

- ``norm_A``, ``norm_B``, ``norm_BA``: Frobenius norms; ‖B·A‖ and ΔW's top singular pair come from r × r products
  (AAᵀ, BᵀB; ``module_geometry``), so no out × in matrix is ever formed and no tall matrix is factorised.
- ``direction``: what the cosines compare. Rank 1: ``B`` itself (B's column; signed cosine: B is the trained
  parameter, so its sign is not arbitrary). Rank > 1: ``top_left_singular``, the top left singular vector of ΔW
  (the output direction the update writes most into), compared as |cos| because a singular vector's sign is
  arbitrary.
- ``cos_prev``: cosine with the previous saved step; ``cos_final``: with the run's last saved step.
- ``top_share``: σ₁² / Σσ², the share of ΔW's energy along that direction.

Per step (adapter_trajectory.csv): the modules' norms summed (as in lora_norms.csv), their mean cosines, the mean
angle to the previous saved step (``rotation_deg``) and that angle per optimizer step (``rotation_deg_per_step``:
saved steps need not be evenly spaced), and the step's coordinates on the first two principal components of the
flattened adapter (every module's A and B, one point per saved step, centred over the run's steps;
``pc1_explained`` / ``pc2_explained`` are the shares of variance). The PCA is computed from the steps' Gram matrix,
accumulated module by module, so memory stays at one module × the saved steps. A component's sign is chosen so the
last saved step sits on its positive side.

phase_transition.csv, per run × EM definition: the step of largest rotation (largest ``rotation_deg_per_step``)
beside the evaluated step whose EM rate rose most from the evaluated step before it, and whether the rotation
falls inside that rise's interval.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from emflow.analysis.norms import lora_modules, saved_adapters
from emflow.analysis.tables import RUN_COLS, sort_rows
from emflow.errors import user_error
from emflow.layout import parse_run_path

DIRECTION_B = "B"  # rank 1: B's column
DIRECTION_SVD = "top_left_singular"  # rank > 1: top left singular vector of ΔW = B·A, compared as |cos|

GEOMETRY_COLUMNS = RUN_COLS + [
    "step",
    "evaluated",
    "module",
    "rank",
    "norm_A",
    "norm_B",
    "norm_BA",
    "top_share",
    "direction",
    "cos_prev",
    "cos_final",
]
TRAJECTORY_COLUMNS = RUN_COLS + [
    "step",
    "evaluated",
    "n_modules",
    "norm_A",
    "norm_B",
    "norm_BA",
    "direction",
    "cos_prev",
    "cos_final",
    "rotation_deg",
    "rotation_deg_per_step",
    "pc1",
    "pc2",
    "pc1_explained",
    "pc2_explained",
]
PHASE_COLUMNS = RUN_COLS + [
    "definition",
    "saved_steps",
    "rotation_step",
    "rotation_from_step",
    "rotation_deg_per_step",
    "em_rise_step",
    "em_rise_from_step",
    "em_rise",
    "rotation_in_em_rise",
]


def _as_numpy(tensor) -> np.ndarray:
    return tensor.double().numpy()  # via torch: numpy has no bfloat16


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else np.full_like(v, np.nan)


def module_geometry(a: np.ndarray, b: np.ndarray) -> dict:
    """Norms, the compared direction (unit vector) and top_share of one LoRA module's A (r × in) and B (out × r).

    Only r × r products are decomposed: with BᵀB = V Λ Vᵀ, ΔW ΔWᵀ = B (AAᵀ) Bᵀ has the eigenvalues (σ²) of
    K = Λ^½ Vᵀ (AAᵀ) V Λ^½, and its top eigenvector w gives ΔW's top left singular vector B V Λ^-½ w.
    """
    rank = a.shape[0]
    ga, gb = a @ a.T, b.T @ b
    energy = float(np.sum(ga * gb))  # ‖B·A‖² = trace(AAᵀ BᵀB)
    lam, v = np.linalg.eigh(gb)
    keep = lam > max(float(lam.max()), 0.0) * 1e-12  # B's column space (none when B = 0)
    lam, v = lam[keep], v[:, keep]
    half = v * np.sqrt(lam)
    s2, w = np.linalg.eigh(half.T @ ga @ half)  # ascending: the last is σ₁²
    top = float(s2[-1]) if len(s2) else 0.0
    if rank == 1:
        direction = b[:, 0]
    elif energy > 0 and top > 0:
        direction = b @ ((v / np.sqrt(lam)) @ w[:, -1])
    else:  # ΔW = 0: no singular direction (NaN cosines)
        direction = np.zeros(b.shape[0])
    return {
        "rank": rank,
        "norm_A": math.sqrt(float(np.trace(ga))),
        "norm_B": math.sqrt(float(np.trace(gb))),
        "norm_BA": math.sqrt(max(energy, 0.0)),
        "top_share": min(top / energy, 1.0) if energy > 0 else math.nan,
        "direction": DIRECTION_B if rank == 1 else DIRECTION_SVD,
        "unit": _unit(direction),
    }


def _cos(u: np.ndarray, v: np.ndarray, signed: bool) -> float:
    c = float(np.clip(u @ v, -1.0, 1.0))
    return c if signed else abs(c)


def pca_coordinates(gram: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(scores n × k, explained share k) of points given by their Gram matrix ``gram`` (n × n), centred here.

    A component's sign puts the last point on its positive side; with no spread the shares are NaN."""
    n = gram.shape[0]
    centre = np.eye(n) - 1.0 / n
    values, vectors = np.linalg.eigh(centre @ gram @ centre)
    values = np.clip(values, 0.0, None)  # rounding leaves tiny negative ones
    total = float(values.sum())
    order = np.argsort(values)[::-1][:k]
    values, vectors = values[order], vectors[:, order]
    scores = vectors * np.sqrt(values)
    explained = values / total if total > 0 else np.full(len(values), np.nan)
    for j in range(scores.shape[1]):
        if scores[-1, j] < 0:
            scores[:, j] = -scores[:, j]
    if scores.shape[1] < k:  # fewer points than components
        scores = np.hstack([scores, np.zeros((n, k - scores.shape[1]))])
        explained = np.concatenate([explained, np.full(k - len(explained), np.nan)])
    return scores, explained


def run_geometry(run_dir: str | Path, keys: dict) -> tuple[list[dict], list[dict]]:
    """(adapter_geometry rows, adapter_trajectory rows) of one run folder; ``keys`` are its run-key columns."""
    from safetensors import safe_open

    saved = saved_adapters(Path(run_dir))
    if not saved:
        return [], []
    steps = [step for step, _, _ in saved]
    evaluated = {step: ev for step, _, ev in saved}
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(safe_open(str(path), framework="pt")) for _, path, _ in saved]
        modules = lora_modules(list(files[-1].keys()), saved[-1][1])
        for f, (_, path, _) in zip(files, saved, strict=True):
            if sorted(f.keys()) != sorted(files[-1].keys()):
                raise user_error(
                    path, None, f"holds other LoRA modules than {saved[-1][1]}", "re-run the train stage for this run"
                )
        gram = np.zeros((len(steps), len(steps)))
        rows = []
        for module, ka, kb in modules:  # one module over every step at a time: memory stays small
            a_s = [_as_numpy(f.get_tensor(ka)) for f in files]
            b_s = [_as_numpy(f.get_tensor(kb)) for f in files]
            flat = np.stack([np.concatenate([a.ravel(), b.ravel()]) for a, b in zip(a_s, b_s, strict=True)])
            gram += flat @ flat.T
            geo = [module_geometry(a, b) for a, b in zip(a_s, b_s, strict=True)]
            final = geo[-1]["unit"]
            for i, (step, g) in enumerate(zip(steps, geo, strict=True)):
                signed = g["direction"] == DIRECTION_B
                rows.append(
                    {
                        **keys,
                        "step": step,
                        "evaluated": evaluated[step],
                        "module": module,
                        **{k: v for k, v in g.items() if k != "unit"},
                        "cos_prev": _cos(g["unit"], geo[i - 1]["unit"], signed) if i else math.nan,
                        "cos_final": _cos(g["unit"], final, signed),
                    }
                )
    scores, explained = pca_coordinates(gram)
    return rows, _trajectory(pd.DataFrame(rows), keys, steps, evaluated, scores, explained)


def _trajectory(geometry: pd.DataFrame, keys: dict, steps: list[int], evaluated: dict, scores, explained) -> list:
    """Per-step rows: module norms summed, mean cosines and angle, and the PCA coordinates."""
    geometry = geometry.assign(angle=np.degrees(np.arccos(geometry["cos_prev"].clip(-1.0, 1.0))))
    out = []
    for i, (step, g) in enumerate(geometry.groupby("step", sort=True)):
        assert step == steps[i]
        gap = step - steps[i - 1] if i else math.nan
        rotation = float(g["angle"].mean()) if i else math.nan
        out.append(
            {
                **keys,
                "step": step,
                "evaluated": evaluated[step],
                "n_modules": len(g),
                "norm_A": float(g["norm_A"].sum()),
                "norm_B": float(g["norm_B"].sum()),
                "norm_BA": float(g["norm_BA"].sum()),
                "direction": ";".join(sorted(set(g["direction"]))),
                "cos_prev": float(g["cos_prev"].mean()) if i else math.nan,
                "cos_final": float(g["cos_final"].mean()),
                "rotation_deg": rotation,
                "rotation_deg_per_step": rotation / gap if i else math.nan,
                "pc1": float(scores[i, 0]),
                "pc2": float(scores[i, 1]),
                "pc1_explained": float(explained[0]),
                "pc2_explained": float(explained[1]),
            }
        )
    return out


def _largest(values: pd.Series, steps: pd.Series) -> tuple[float, float, float]:
    """(step, previous step, value) where ``values`` (indexed like ``steps``) is largest; NaNs without any."""
    ok = values.notna()
    if not ok.any():
        return math.nan, math.nan, math.nan
    i = values[ok].idxmax()  # first of ties: the earliest step
    pos = steps.index.get_loc(i)
    return int(steps[i]), int(steps.iloc[pos - 1]), float(values[i])


def phase_transition_table(trajectory: pd.DataFrame, em: pd.DataFrame) -> pd.DataFrame:
    """phase_transition.csv: per run × EM definition, the step of largest rotation and of largest EM rise."""
    rows = []
    definitions = sorted(em["definition"].dropna().unique()) if not em.empty else []
    for key, t in trajectory.groupby(RUN_COLS, sort=True):
        t = t.sort_values("step").reset_index(drop=True)
        rot_step, rot_from, rot = _largest(t["rotation_deg_per_step"], t["step"])
        keys = dict(zip(RUN_COLS, key, strict=True))
        mine = em.merge(pd.DataFrame([keys]), on=RUN_COLS) if not em.empty else em
        for d in definitions:
            e = mine[(mine["definition"] == d) & mine["em_rate"].notna()].sort_values("step").reset_index(drop=True)
            rise_step, rise_from, rise = _largest(e["em_rate"].diff(), e["step"])
            inside = rise_from < rot_step <= rise_step if not (math.isnan(rot_step) or math.isnan(rise)) else None
            rows.append(
                {
                    **keys,
                    "definition": d,
                    "saved_steps": len(t),
                    "rotation_step": rot_step,
                    "rotation_from_step": rot_from,
                    "rotation_deg_per_step": rot,
                    "em_rise_step": rise_step,
                    "em_rise_from_step": rise_from,
                    "em_rise": rise,
                    "rotation_in_em_rise": inside,
                }
            )
    df = pd.DataFrame(rows, columns=PHASE_COLUMNS)
    for col in ("rotation_step", "rotation_from_step", "em_rise_step", "em_rise_from_step"):
        df[col] = df[col].astype("Int64")
    return sort_rows(df, RUN_COLS + ["definition"])


def geometry_tables(run_dirs: Iterable[str | Path], em: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """adapter_geometry, adapter_trajectory and phase_transition from run folders and em.csv's rows."""
    geometry, trajectory = [], []
    for run_dir in run_dirs:
        keys = parse_run_path(run_dir)
        keys.pop("step")
        g, t = run_geometry(run_dir, keys)
        geometry += g
        trajectory += t
    trajectory_df = sort_rows(pd.DataFrame(trajectory, columns=TRAJECTORY_COLUMNS), RUN_COLS + ["step"])
    return {
        "adapter_geometry": sort_rows(pd.DataFrame(geometry, columns=GEOMETRY_COLUMNS), RUN_COLS + ["step", "module"]),
        "adapter_trajectory": trajectory_df,
        "phase_transition": phase_transition_table(trajectory_df, em),
    }
