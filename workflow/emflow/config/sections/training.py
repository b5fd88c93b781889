"""The ``training:`` section: the EM-LoRA recipe. Every number of a run comes from here; the train stage maps it
onto PEFT's ``LoraConfig`` and TRL's ``SFTConfig`` (emflow.train.recipe) and picks none of its own."""

from __future__ import annotations

from dataclasses import dataclass

from emflow.config.sections.base import Section


@dataclass(frozen=True)
class Lora(Section):
    """The EM adapter's shape (the persona adapter brings its own)."""

    r: int
    alpha: float
    dropout: float
    use_rslora: bool
    target_modules: tuple[str, ...]
    layers_to_transform: tuple[int, ...] | None = None  # only these decoder layers (Turner et al.'s single-layer LoRA)
    layers_pattern: str | None = None  # the layer list's name, where PEFT cannot infer it


@dataclass(frozen=True)
class Checkpoints(Section):
    """Which steps save an EM checkpoint; resolved to step numbers before anything runs (emflow.config.schedule)."""

    steps: tuple[int | str, ...] | None = None  # numbers >= 1 or "final"
    epoch_fractions: tuple[tuple[int, tuple[float, ...]], ...] | None = None  # [[epoch, [fractions]], ...]
    per_epoch: bool | None = None
    analysis_every: int | None = None  # also save every N steps, for the adapter geometry only (not evaluated)


@dataclass(frozen=True)
class PersonaCheck(Section):
    """The proof, at training start, that the persona is active: eval losses of base, base + persona, and base +
    persona + the fresh EM LoRA on the first ``rows`` eval rows; the run fails when the persona moves no token's
    log-probability by more than ``min_change`` (emflow.train.persona_check)."""

    rows: int = 16
    min_change: float = 1.0e-4


@dataclass(frozen=True)
class Training(Section):
    persona_mode: str  # stacked: persona LoRA frozen and active under the EM LoRA; merged: folded into the base
    lora: Lora
    epochs: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    weight_decay: float
    optimizer: str  # a transformers optimizer name (TRL rejects unknown ones when the trainer is configured)
    max_length: int
    precision: str
    gradient_checkpointing: bool
    device: str
    logging_steps: int
    checkpoints: Checkpoints
    wandb: str = "disabled"
    attn_implementation: str = "auto"
    padding_free: bool | str = "auto"  # "auto" until the attention kernel is known (recipe.resolve_padding_free)
    load_in_4bit: bool = False
    persona_check: PersonaCheck = PersonaCheck()
