"""Norms of the EM LoRA adapter at each saved checkpoint (lora_norms.csv)."""

from __future__ import annotations

import re
from pathlib import Path

from emflow.analysis.tables import RUN_COLS
from emflow.errors import user_error

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


def lora_norms(path: str | Path) -> dict[str, float]:
    """Frobenius norms of A, B and B·A, each summed over the adapter's LoRA modules."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    pairs = [(k, k.replace("lora_A", "lora_B")) for k in tensors if "lora_A" in k]
    if not pairs:
        raise user_error(path, None, "no lora_A weights", "point at a PEFT LoRA adapter checkpoint")
    norm_a = norm_b = norm_ba = 0.0
    for ka, kb in pairs:
        if kb not in tensors:
            raise user_error(path, kb, "lora_B weight missing for its lora_A", "re-save the checkpoint")
        a, b = tensors[ka].float(), tensors[kb].float()
        norm_a += float(a.norm())
        norm_b += float(b.norm())
        norm_ba += float((b @ a).norm())
    return {"n_modules": len(pairs), "norm_A": norm_a, "norm_B": norm_b, "norm_BA": norm_ba}


def run_norms(run_dir: Path, keys: dict) -> list[dict]:
    """One lora_norms.csv row per saved checkpoint of the run ``keys`` names."""
    return [{**keys, "step": step, **lora_norms(adapter_file(ckpt))} for step, ckpt in checkpoints(run_dir)]
