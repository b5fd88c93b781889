"""The training recipe (config.yaml ``training:``): validated once, then mapped onto TRL's ``SFTConfig``.

Every number of a run comes from here; nothing in the trainer code picks its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from emflow.errors import user_error

SOURCE = "config.yaml"

LORA_KEYS = {"r", "alpha", "dropout", "use_rslora", "target_modules"}
REQUIRED_KEYS = {
    "persona_mode",
    "lora",
    "epochs",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler",
    "warmup_steps",
    "weight_decay",
    "optimizer",
    "max_length",
    "precision",
    "gradient_checkpointing",
    "device",
    "logging_steps",
}
# `checkpoints` is resolved into the `steps` argument by the workflow; the rest default to OPTIONAL_DEFAULTS.
OPTIONAL_DEFAULTS = {"wandb": "disabled", "attn_implementation": "auto", "padding_free": "auto", "load_in_4bit": False}
OPTIONAL_KEYS = {"checkpoints", *OPTIONAL_DEFAULTS}
CHOICES = {
    "persona_mode": ("stacked", "merged"),
    "precision": ("bf16", "fp32"),
    "device": ("auto", "cpu", "cuda"),
    "wandb": ("disabled", "offline", "online"),
    "attn_implementation": ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"),
}


@dataclass(frozen=True)
class Recipe:
    persona_mode: str
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    use_rslora: bool
    target_modules: tuple[str, ...]
    epochs: int
    batch_size: int
    grad_accum: int
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    weight_decay: float
    optimizer: str
    max_length: int
    precision: str
    gradient_checkpointing: bool
    device: str
    logging_steps: int
    wandb: str
    attn_implementation: str
    padding_free: bool | str  # "auto" until the attention kernel is known (see resolve_padding_free)
    load_in_4bit: bool


def _field(name: str) -> str:
    return f"training.{name}"


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise user_error(SOURCE, _field(name), f"expected an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, name: str, minimum: float, maximum: float | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise user_error(SOURCE, _field(name), f"expected a number {bound}, got {value!r}")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise user_error(SOURCE, _field(name), f"expected true or false, got {value!r}")
    return value


def _auto_or_bool(value: Any, name: str) -> bool | str:
    return value if value == "auto" else _bool(value, name)


def resolve_padding_free(recipe: Recipe, attn: str) -> Recipe:
    """``auto``: padding-free only with a varlen (flash) kernel. sdpa/eager would turn the packed row into a
    dense block-diagonal mask, which costs more than the padding it saves."""
    if recipe.padding_free != "auto":
        return recipe
    return replace(recipe, padding_free=attn.startswith("flash"))


def _choice(value: Any, name: str) -> str:
    if value not in CHOICES[name]:
        raise user_error(SOURCE, _field(name), f"{value!r} is not one of {', '.join(CHOICES[name])}")
    return value


def _keys(d: Any, name: str, required: set[str], optional: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise user_error(SOURCE, name, f"expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - required - optional)
    if unknown:
        raise user_error(
            SOURCE,
            name,
            f"unknown key(s) {', '.join(unknown)}",
            f"valid keys are {', '.join(sorted(required | optional))}",
        )
    missing = sorted(required - set(d))
    if missing:
        raise user_error(SOURCE, name, f"missing key(s) {', '.join(missing)}")


def parse_recipe(recipe: dict) -> Recipe:
    """Validate the ``training:`` mapping; unknown or missing keys and bad values raise ``EmflowError``."""
    _keys(recipe, "training", REQUIRED_KEYS, OPTIONAL_KEYS)
    lora = recipe["lora"]
    _keys(lora, "training.lora", LORA_KEYS)
    targets = lora["target_modules"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise user_error(
            SOURCE,
            "training.lora.target_modules",
            f"expected a list of module names, got {targets!r}",
            "e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]",
        )
    for name in ("lr_scheduler", "optimizer"):
        if not isinstance(recipe[name], str) or not recipe[name]:
            raise user_error(SOURCE, _field(name), f"expected a name, got {recipe[name]!r}")
    return Recipe(
        persona_mode=_choice(recipe["persona_mode"], "persona_mode"),
        lora_r=_int(lora["r"], "lora.r", 1),
        lora_alpha=_float(lora["alpha"], "lora.alpha", 0.0),
        lora_dropout=_float(lora["dropout"], "lora.dropout", 0.0, 1.0),
        use_rslora=_bool(lora["use_rslora"], "lora.use_rslora"),
        target_modules=tuple(targets),
        epochs=_int(recipe["epochs"], "epochs", 1),
        batch_size=_int(recipe["per_device_batch_size"], "per_device_batch_size", 1),
        grad_accum=_int(recipe["gradient_accumulation_steps"], "gradient_accumulation_steps", 1),
        learning_rate=_float(recipe["learning_rate"], "learning_rate", 0.0),
        lr_scheduler=recipe["lr_scheduler"],
        warmup_steps=_int(recipe["warmup_steps"], "warmup_steps", 0),
        weight_decay=_float(recipe["weight_decay"], "weight_decay", 0.0),
        optimizer=recipe["optimizer"],
        max_length=_int(recipe["max_length"], "max_length", 1),
        precision=_choice(recipe["precision"], "precision"),
        gradient_checkpointing=_bool(recipe["gradient_checkpointing"], "gradient_checkpointing"),
        device=_choice(recipe["device"], "device"),
        logging_steps=_int(recipe["logging_steps"], "logging_steps", 1),
        wandb=_choice(_opt(recipe, "wandb"), "wandb"),
        attn_implementation=_choice(_opt(recipe, "attn_implementation"), "attn_implementation"),
        padding_free=_auto_or_bool(_opt(recipe, "padding_free"), "padding_free"),
        load_in_4bit=_bool(_opt(recipe, "load_in_4bit"), "load_in_4bit"),
    )


def _opt(recipe: dict, name: str):
    return recipe.get(name, OPTIONAL_DEFAULTS[name])


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        use_rslora=recipe.use_rslora,
        target_modules=list(recipe.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def use_cpu(recipe: Recipe) -> bool:
    import torch

    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise user_error(
            SOURCE,
            "training.device",
            "cuda requested but no CUDA device is visible",
            "run on a GPU node or set device: auto",
        )
    return recipe.device == "cpu" or not torch.cuda.is_available()


def report_to(recipe: Recipe) -> str:
    if recipe.wandb == "disabled":
        return "none"
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise user_error(
            SOURCE,
            "training.wandb",
            f"{recipe.wandb!r} needs the wandb package, which is not installed",
            "install wandb in the training environment or set wandb: disabled",
        )
    return "wandb"


def sft_config(recipe: Recipe, *, output_dir: str, max_steps: int, seed: int):
    """TRL ``SFTConfig`` for the recipe. Saving and evaluation are driven by the checkpoint steps, not by TRL.

    Datasets arrive tokenized, masked and truncated (``emflow.train.tokenize``), so TRL neither masks nor truncates;
    with ``padding_free`` each micro-batch is one concatenated row with ``position_ids`` restarting per example,
    which flash-attention reads as varlen boundaries and sdpa/eager as a block-diagonal mask.
    """
    from trl import SFTConfig

    assert isinstance(recipe.padding_free, bool), "resolve_padding_free() before sft_config()"
    try:
        return SFTConfig(
            output_dir=output_dir,
            max_steps=max_steps,
            num_train_epochs=recipe.epochs,
            per_device_train_batch_size=recipe.batch_size,
            per_device_eval_batch_size=recipe.batch_size,
            gradient_accumulation_steps=recipe.grad_accum,
            learning_rate=recipe.learning_rate,
            lr_scheduler_type=recipe.lr_scheduler,
            warmup_steps=recipe.warmup_steps,
            weight_decay=recipe.weight_decay,
            optim=recipe.optimizer,
            max_length=None if recipe.padding_free else recipe.max_length,
            padding_free=recipe.padding_free,
            bf16=recipe.precision == "bf16",
            activation_checkpointing=recipe.gradient_checkpointing,  # new name of gradient_checkpointing
            use_cpu=use_cpu(recipe),
            logging_steps=recipe.logging_steps,
            save_strategy="no",
            eval_strategy="no",
            save_total_limit=1,
            assistant_only_loss=False,  # labels are already masked to assistant tokens
            report_to=report_to(recipe),
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
        )
    except ValueError as err:  # TRL/transformers reject unknown optimizer or scheduler names here
        raise user_error(
            SOURCE, "training", str(err).splitlines()[0], "check optimizer / lr_scheduler against transformers' names"
        ) from err
