"""Load a base model, the frozen persona LoRA and an EM LoRA checkpoint for inference, all from local disk.

Jobs run offline: every path must already hold the files (``local_files_only=True``). The persona and the
EM adapter are loaded as two named PEFT adapters ("persona", "em") that are active together, the same
stacking the trainer used, so generation sees base + persona + EM exactly as training did.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emflow.errors import user_error
from emflow.fetch.hub import FETCH_HINT

log = logging.getLogger(__name__)

PERSONA = "persona"
EM = "em"


def resolve_device(device: str, field: str = "device") -> str:
    """``auto`` is the GPU when one is visible, else the CPU; ``cuda`` without a GPU is a user error naming
    ``field`` (the config key the value came from). The value itself was validated by the config schema."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise user_error(
            "config", field, "device 'cuda' requested but no GPU is visible", "run on a GPU node or set device: auto"
        )
    return device


def resolve_dtype(dtype: str, device: str):
    """``auto`` is bf16 on a GPU that supports it and fp32 elsewhere (CPU bf16 is slow and lossy)."""
    import torch

    if dtype == "fp32":
        return torch.float32
    if dtype == "bf16":
        return torch.bfloat16
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def require_dir(path: str | Path, marker: str, what: str) -> Path:
    """A local model/adapter folder, or the one-line fetch hint (jobs never reach the hub)."""
    path = Path(path)
    if not (path / marker).is_file():
        raise user_error(path, what, f"no {marker} in {path} (not fetched?)", FETCH_HINT)
    return path


def adapter_dir(path: str | Path, name: str = EM) -> Path:
    """The folder holding ``adapter_config.json``.

    PEFT saves a non-default named adapter into ``<dir>/<name>/``, so a trainer checkpoint of a stacked model
    may hold the EM adapter one level down; both layouts are accepted.
    """
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / name / "adapter_config.json").is_file():
        return path / name
    raise user_error(
        path,
        name,
        f"no adapter_config.json in {path} or {path / name}",
        FETCH_HINT if name == PERSONA else "point at a saved EM-adapter checkpoint directory",
    )


def load_tokenizer(path: str | Path, *, padding_side: str = "left"):
    """The tokenizer saved with a local model. ``left`` pads batched decoder-only generation (inference and the
    judge); training passes ``right``, which is how TRL's collator pads. A tokenizer without a pad token reuses eos
    (what TRL falls back to as well)."""
    from transformers import AutoTokenizer

    path = require_dir(path, "tokenizer_config.json", "tokenizer")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(path: str | Path, *, dtype: str = "auto", device: str = "auto"):
    from transformers import AutoModelForCausalLM

    path = require_dir(path, "config.json", "base model")
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, dev), local_files_only=True)
    model.to(dev)
    model.eval()
    return model


def _activate(model) -> None:
    names = [n for n in (PERSONA, EM) if n in model.peft_config]
    # PeftModel.set_adapter takes one name; the tuner (LoraModel) accepts a list and activates them together.
    model.base_model.set_adapter(names, inference_mode=True)
    model.eval()


def load_for_inference(
    base: str | Path,
    persona: str | Path | None = None,
    adapter: str | Path | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
) -> tuple[Any, Any]:
    """Base + optional persona LoRA + optional EM LoRA, both active, in eval mode; returns (model, tokenizer)."""
    from peft import PeftModel

    tokenizer = load_tokenizer(base)
    model = load_base(base, dtype=dtype, device=device)
    first = [(PERSONA, persona), (EM, adapter)]
    first = [(name, p) for name, p in first if p is not None]
    if not first:
        log.info("loaded base %s (no adapters)", base)
        return model, tokenizer
    (name0, path0), rest = first[0], first[1:]
    model = PeftModel.from_pretrained(model, adapter_dir(path0, name0), adapter_name=name0, is_trainable=False)
    for name, path in rest:
        model.load_adapter(adapter_dir(path, name), adapter_name=name, is_trainable=False)
    _activate(model)
    log.info("loaded base %s with adapters %s", base, {n: str(p) for n, p in first})
    return model, tokenizer


def swap_em_adapter(model, adapter: str | Path | None):
    """Replace (or remove, with None) the EM adapter without reloading the base; returns the model to use.

    A plain base model (no adapter loaded yet) is wrapped in a PeftModel, so callers must use the return value.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        if adapter is None:
            return model
        model = PeftModel.from_pretrained(model, adapter_dir(adapter, EM), adapter_name=EM, is_trainable=False)
        _activate(model)
        return model
    if EM in model.peft_config:
        model.base_model.set_adapter([n for n in model.peft_config if n != EM] or [EM], inference_mode=True)
        model.delete_adapter(EM)
    if adapter is not None:
        model.load_adapter(adapter_dir(adapter, EM), adapter_name=EM, is_trainable=False)
    if model.peft_config:
        _activate(model)
    log.info("EM adapter now %s", adapter)
    return model


def active_adapters(model) -> list[str]:
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return []
    return list(model.base_model.active_adapters)


def underlying(model):
    """The transformers model under any PEFT wrapper (where ``generation_config`` lives)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model
