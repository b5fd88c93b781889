"""The EM adapter on disk: saved alone (PEFT layout, no persona weights) and loaded back into a stacked model."""

from __future__ import annotations

import shutil
from pathlib import Path

from emflow.io import atomic_dir, atomic_write_json
from emflow.models import EM
from emflow.train.stack import activate

RECORD = "emflow_checkpoint.json"


def save_em_adapter(model, dest: Path, record: dict) -> None:
    """Write the EM adapter alone at the top of ``dest`` (PEFT layout) plus ``emflow_checkpoint.json``, atomically."""
    with atomic_dir(dest) as tmp:
        # PEFT writes a non-default adapter into a subfolder named after it; lift it to the top.
        model.save_pretrained(tmp / "_peft", selected_adapters=[EM])
        for f in (tmp / "_peft" / EM).iterdir():
            f.rename(tmp / f.name)
        shutil.rmtree(tmp / "_peft")
        atomic_write_json(tmp / RECORD, record)


def load_em_weights(model, adapter_dir: Path) -> None:
    """Load saved EM weights into the existing EM adapter (the Trainer's resume would deactivate the persona)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(adapter_dir / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, state, adapter_name=EM)
    missing = [k for k in result.missing_keys if f".{EM}." in k and "lora_" in k]
    if result.unexpected_keys or missing:
        raise RuntimeError(
            f"EM adapter at {adapter_dir} does not fit the model: "
            f"unexpected {result.unexpected_keys[:3]}, missing {missing[:3]}"
        )
    activate(model)


def publish(src: Path, dest: Path) -> None:
    """Copy a saved checkpoint folder to its place in the run folder, atomically."""
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
