"""The ``training:`` section mapped onto PEFT's ``LoraConfig`` and TRL's ``SFTConfig``.

The section arrives validated (the config schema, once, at parse time); these functions only translate it, and
report what only the running machine can tell (no GPU, a missing package, a name TRL rejects).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from emflow.config.sections.training import Training
from emflow.errors import user_error
from emflow.models import resolve_device

SOURCE = "config.yaml"


def resolve_padding_free(training: Training, attn: str) -> Training:
    """``auto``: padding-free only with a varlen (flash) kernel. sdpa/eager would turn the packed row into a
    dense block-diagonal mask, which costs more than the padding it saves."""
    if training.padding_free != "auto":
        return training
    return dataclasses.replace(training, padding_free=attn.startswith("flash"))


def lora_config(training: Training):
    from peft import LoraConfig

    lora = training.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        use_rslora=lora.use_rslora,
        target_modules=list(lora.target_modules),
        layers_to_transform=list(lora.layers_to_transform) if lora.layers_to_transform is not None else None,
        layers_pattern=lora.layers_pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )


def check_layers(training: Training, base: str | Path, recipe_field: str = "training") -> None:
    """``lora.layers_to_transform`` must name layers the base has: said before anything loads, naming the recipe's
    key (``training`` or ``variants.<name>``), not as PEFT's error once the model is on the GPU."""
    layers = training.lora.layers_to_transform
    if not layers:
        return
    config = json.loads((Path(base) / "config.json").read_text())
    n = config.get("num_hidden_layers", config.get("text_config", {}).get("num_hidden_layers"))
    if n is not None and max(layers) >= n:
        raise user_error(
            SOURCE,
            f"{recipe_field}.lora.layers_to_transform",
            f"layer {max(layers)} does not exist: base {base} has {n} layers (0..{n - 1})",
            f"name layers below {n}, or give this base its own variant",
        )


def use_cpu(training: Training) -> bool:
    return resolve_device(training.device, field="training.device") == "cpu"


def report_to(training: Training) -> str:
    if training.wandb == "disabled":
        return "none"
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise user_error(
            SOURCE,
            "training.wandb",
            f"{training.wandb!r} needs the wandb package, which is not installed",
            "install wandb in the training environment or set wandb: disabled",
        )
    return "wandb"


def sft_config(training: Training, *, output_dir: str, max_steps: int, seed: int):
    """TRL ``SFTConfig`` for the section. Saving and evaluation are driven by the checkpoint steps, not by TRL.

    Datasets arrive tokenized, masked and truncated (``emflow.train.tokenize``), so TRL neither masks nor truncates;
    with ``padding_free`` each micro-batch is one concatenated row with ``position_ids`` restarting per example,
    which flash-attention reads as varlen boundaries and sdpa/eager as a block-diagonal mask.
    """
    from trl import SFTConfig

    t = training
    assert isinstance(t.padding_free, bool), "resolve_padding_free() before sft_config()"
    try:
        return SFTConfig(
            output_dir=output_dir,
            max_steps=max_steps,
            num_train_epochs=t.epochs,
            per_device_train_batch_size=t.per_device_batch_size,
            per_device_eval_batch_size=t.per_device_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler,
            warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay,
            optim=t.optimizer,
            max_length=None if t.padding_free else t.max_length,
            padding_free=t.padding_free,
            bf16=t.precision == "bf16",
            activation_checkpointing=t.gradient_checkpointing,  # new name of gradient_checkpointing
            use_cpu=use_cpu(t),
            logging_steps=t.logging_steps,
            save_strategy="no",
            eval_strategy="no",
            save_total_limit=1,
            assistant_only_loss=False,  # labels are already masked to assistant tokens
            report_to=report_to(t),
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
        )
    except ValueError as err:  # TRL/transformers reject unknown optimizer or scheduler names here
        raise user_error(
            SOURCE, "training", str(err).splitlines()[0], "check optimizer / lr_scheduler against transformers' names"
        ) from err
