"""A GGUF checkpoint as a plain Hugging Face model folder, so every stage loads it like any other local model.

transformers (with the ``gguf`` package) loads and dequantizes a GGUF file, but ``save_pretrained`` refuses a
model loaded that way; its state dict is therefore loaded into a model built from its config, and that model is
saved (fp32 safetensors, config, generation config and the tokenizer with its chat template).
"""

from __future__ import annotations

import logging
from pathlib import Path

from emflow.errors import user_error
from emflow.io import atomic_dir

log = logging.getLogger(__name__)


def gguf_to_hf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` (atomically) from ``gguf_file``; returns ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise user_error(gguf_file, None, "no such GGUF file", "check the path")
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("%s -> %s (%d parameters, fp32)", gguf_file, out_dir, sum(p.numel() for p in model.parameters()))
    return Path(out_dir)
