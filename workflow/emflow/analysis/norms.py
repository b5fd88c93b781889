"""Norms of the EM LoRA adapter at each saved checkpoint (lora_norms.csv), and the saved adapters of a run and their
LoRA modules, which the adapter geometry (emflow.analysis.geometry) reads too."""

from __future__ import annotations

import re
from pathlib import Path

from emflow.analysis.tables import RUN_COLS
from emflow.errors import user_error
from emflow.layout import GEOMETRY_DIR

NORM_COLUMNS = RUN_COLS + ["step", "n_modules", "norm_A", "norm_B", "norm_BA"]
CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved checkpoint of a run, by step."""
    found = [
        (int(m[1]), p) for p in run_dir.glob("checkpoint-*") if p.is_dir() and (m := CHECKPOINT_RE.fullmatch(p.name))
    ]
    return sorted(found, key=lambda sp: sp[0])


def adapter_file(ckpt: Path) -> Path:
    """The checkpoint's EM adapter weights (directly in it, or in the one sub-folder that holds them)."""
    direct = ckpt / "adapter_model.safetensors"
    if direct.is_file():
        return direct
    found = sorted(ckpt.rglob("adapter_model.safetensors"))
    if len(found) != 1:
        raise user_error(
            ckpt,
            None,
            f"expected one adapter_model.safetensors, found {len(found)}",
            "re-run the train stage so each checkpoint holds the EM adapter",
        )
    return found[0]


def saved_adapters(run_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, adapter file, evaluated) of every EM adapter a run saved, by step: its checkpoints (evaluated) and
    the geometry-only saves under ``geometry/`` (``checkpoints.analysis_every``)."""
    found = {step: (adapter_file(ckpt), True) for step, ckpt in checkpoints(run_dir)}
    for step, ckpt in checkpoints(run_dir / GEOMETRY_DIR):
        found.setdefault(step, (adapter_file(ckpt), False))
    return [(step, path, evaluated) for step, (path, evaluated) in sorted(found.items())]


def lora_modules(keys: list[str], path: str | Path) -> list[tuple[str, str, str]]:
    """(module, lora_A key, lora_B key) of every LoRA module among an adapter file's tensor ``keys``, sorted."""
    out = []
    for ka in sorted(k for k in keys if ".lora_A." in k):
        kb = ka.replace(".lora_A.", ".lora_B.")
        if kb not in keys:
            raise user_error(path, kb, "lora_B weight missing for its lora_A", "re-save the checkpoint")
        out.append((ka.split(".lora_A.")[0], ka, kb))
    if not out:
        raise user_error(path, None, "no lora_A weights", "point at a PEFT LoRA adapter checkpoint")
    return out


def lora_norms(path: str | Path) -> dict[str, float]:
    """Frobenius norms of A, B and B·A, each summed over the adapter's LoRA modules."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    pairs = [(ka, kb) for _, ka, kb in lora_modules(list(tensors), path)]
    norm_a = norm_b = norm_ba = 0.0
    for ka, kb in pairs:
        a, b = tensors[ka].float(), tensors[kb].float()
        norm_a += float(a.norm())
        norm_b += float(b.norm())
        norm_ba += float((b @ a).norm())
    return {"n_modules": len(pairs), "norm_A": norm_a, "norm_B": norm_b, "norm_BA": norm_ba}


def run_norms(run_dir: Path, keys: dict) -> list[dict]:
    """One lora_norms.csv row per saved checkpoint of the run ``keys`` names."""
    return [{**keys, "step": step, **lora_norms(adapter_file(ckpt))} for step, ckpt in checkpoints(run_dir)]
