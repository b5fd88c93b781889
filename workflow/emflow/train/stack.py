"""The stacked model: base + frozen persona LoRA + trainable EM LoRA, and the checks that only the EM LoRA trains.

PEFT gotchas handled here (peft 0.21): ``PeftModel.set_adapter`` takes one name, so both adapters are activated on
the tuner (``model.base_model.set_adapter``), which makes both trainable; the persona is then frozen again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from emflow.config.sections.training import Training
from emflow.errors import user_error
from emflow.models import EM, PERSONA, require_dir  # one pair of adapter names for training and inference
from emflow.train.recipe import SOURCE, lora_config, use_cpu

log = logging.getLogger(__name__)


def attn_implementation(training: Training, on_cuda: bool) -> str:
    """The attention kernel: ``auto`` takes flash-attention 2 (varlen, so padding-free batches cost nothing extra)
    when it is importable on CUDA in bf16, else PyTorch sdpa."""
    flash2 = importlib.util.find_spec("flash_attn") is not None
    wanted = training.attn_implementation
    if wanted == "auto":
        return "flash_attention_2" if on_cuda and flash2 and training.precision == "bf16" else "sdpa"
    needs = {
        "flash_attention_2": ("flash_attn", flash2),
        "flash_attention_3": ("flash_attn_interface", importlib.util.find_spec("flash_attn_interface") is not None),
    }
    if wanted in needs:
        package, present = needs[wanted]
        if not (present and on_cuda):
            raise user_error(
                SOURCE,
                "training.attn_implementation",
                f"{wanted} needs CUDA and the {package} package "
                f"({'no CUDA device' if not on_cuda else package + ' not installed'})",
                "set attn_implementation: auto",
            )
    return wanted


def quantization_config(training: Training, on_cuda: bool, persona: bool):
    """4-bit NF4 base (QLoRA, as the replication study's bnb-4bit models), or None."""
    if not training.load_in_4bit:
        return None
    if not on_cuda:
        raise user_error(
            SOURCE,
            "training.load_in_4bit",
            "4-bit loading needs a CUDA device",
            "run on a GPU node or set load_in_4bit: false",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise user_error(
            SOURCE,
            "training.load_in_4bit",
            "the bitsandbytes package is not installed",
            "install bitsandbytes in the training environment or set load_in_4bit: false",
        )
    if persona and training.persona_mode == "merged":
        raise user_error(
            SOURCE,
            "training.persona_mode",
            "merged cannot fold a persona into 4-bit weights",
            "use persona_mode: stacked with load_in_4bit",
        )
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if training.precision == "bf16" else torch.float32,
    )


def build_model(base: str | Path, persona: str | Path | None, training: Training, seed: int, probe=None):
    """Base (+ persona, stacked or merged) + a fresh EM LoRA, with only the EM LoRA trainable.

    ``probe`` (an ``emflow.train.persona_check.Probe``) measures each configuration as it is built: ``base``,
    ``persona`` (and ``persona_cast`` when merged below fp32), ``stacked``; on CUDA the model then sits on the GPU
    already (where the Trainer would put it), so the sample is scored there.
    """
    import torch

    base = require_dir(Path(base), "config.json", "base")
    on_cuda = not use_cpu(training)
    dtype = torch.bfloat16 if training.precision == "bf16" else torch.float32
    stacked = persona is not None and training.persona_mode == "stacked"
    # merged: fold the persona in at fp32 and round once, instead of rounding base and delta separately
    load_dtype = torch.float32 if persona is not None and not stacked else dtype
    quant = quantization_config(training, on_cuda, persona is not None)
    model = _load_base(base, training, on_cuda, load_dtype, quant)
    if probe is not None:
        if on_cuda and quant is None:
            model.to(torch.device("cuda", torch.cuda.current_device()))
        probe.measure("base", model)
    if persona is not None:
        model = _attach_persona(model, persona, stacked, dtype, probe)
    model = _add_em(model, training, stacked, seed)
    activate(model)
    if probe is not None:
        probe.measure("stacked", model)
    model.train()
    return model


def _load_base(base: Path, training: Training, on_cuda: bool, dtype, quant):
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    attn = attn_implementation(training, on_cuda)
    model = AutoModelForCausalLM.from_pretrained(
        base,
        dtype=dtype,
        local_files_only=True,
        attn_implementation=attn,
        quantization_config=quant,
        **({"device_map": {"": torch.cuda.current_device()}} if quant is not None else {}),
    )
    log.info("base %s: attention %s, %s%s", base, attn, dtype, ", 4-bit NF4" if quant is not None else "")
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
    return model


def _attach_persona(model, persona: str | Path, stacked: bool, dtype, probe=None):
    """The frozen persona LoRA as a named adapter (stacked), or folded into the base weights (merged)."""
    from peft import PeftModel

    persona = require_dir(Path(persona), "adapter_config.json", "persona")
    model = PeftModel.from_pretrained(model, persona, adapter_name=PERSONA, is_trainable=False)
    if not stacked:
        model = model.merge_and_unload()
        if probe is not None:
            probe.measure("persona", model)  # at fp32, like the base it is compared with
        cast = model.dtype != dtype
        model = model.to(dtype)
        if probe is not None and cast:
            probe.measure("persona_cast", model)
        log.info("merged persona %s into the base (fp32, cast to %s)", persona, dtype)
    elif probe is not None:
        probe.measure("persona", model)
    return model


def _add_em(model, training: Training, stacked: bool, seed: int):
    """A fresh EM LoRA on top of whatever came before."""
    from peft import get_peft_model
    from transformers import set_seed

    # Same RNG state for the EM init whatever came before, so stacked and merged runs start identical.
    set_seed(seed)
    try:
        if stacked:
            model.add_adapter(EM, lora_config(training))
            return model
        return get_peft_model(model, lora_config(training), adapter_name=EM)
    except ValueError as err:  # e.g. target modules not found in the model
        raise user_error(SOURCE, "training.lora.target_modules", str(err).splitlines()[0]) from err


def lora_param_count(model_config, training: Training) -> int:
    """Trainable EM LoRA parameters for a model shape, counted on the meta device (nothing allocated):
    e.g. 80,740,352 for Qwen2.5-7B at rank 32 on all seven projections."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(model_config), lora_config(training))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_persona(model) -> bool:
    return PERSONA in model.peft_config


def activate(model) -> None:
    """Persona (if stacked) and EM active; EM trainable, persona and base frozen. Also after a resume."""
    if has_persona(model):
        model.base_model.set_adapter([PERSONA, EM])
        model.set_requires_grad(PERSONA, False)
    else:
        model.base_model.set_adapter([EM])
    model.set_requires_grad(EM, True)
    check_trainable(model)


def check_trainable(model) -> int:
    """Internal invariant: exactly the EM LoRA matrices train. Returns the trainable parameter count."""
    trainable = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
    wrong = [n for n, _ in trainable if f".{EM}." not in n or "lora_" not in n]
    if wrong or not trainable:
        raise RuntimeError(f"only the EM LoRA may train; trainable: {wrong[:5] or 'nothing'}")
    active = list(model.base_model.active_adapters)
    expected = [PERSONA, EM] if has_persona(model) else [EM]
    if sorted(active) != sorted(expected):
        raise RuntimeError(f"active adapters are {active}, expected {expected}")
    return sum(n for _, n in trainable)


def adapter_digest(model, adapter: str) -> str:
    """sha256 over an adapter's tensors (names and bytes), to prove a frozen adapter never moved."""
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if f".{adapter}." in name:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
