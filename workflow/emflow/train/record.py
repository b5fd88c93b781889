"""What a run records about itself: the provenance in every EM checkpoint (``emflow_checkpoint.json``) and the
run's ``summary.json``."""

from __future__ import annotations

from pathlib import Path

from emflow.config.sections.training import Training
from emflow.io import sha256_file, stable_hash

SUMMARY_PROVENANCE = ("base_spec", "base_revision", "persona_spec", "persona_revision", "recipe_hash")


def revision_of(spec: str | None) -> str | None:
    """``REVISION`` of an ``hf:OWNER/NAME@REVISION[/SUBFOLDER]`` spec; None for a local directory."""
    if not spec or not spec.startswith("hf:") or "@" not in spec:
        return None
    return spec.split("@", 1)[1].split("/", 1)[0]


def _sha256_of(folder: str | Path | None, name: str) -> str | None:
    f = None if folder is None else Path(folder) / name
    return sha256_file(f) if f is not None and f.is_file() else None


def checkpoint_record(
    *,
    base: str | Path,
    persona: str | Path | None,
    base_spec: str | None,
    persona_spec: str | None,
    training: Training,
    seed: int,
    trainable: int,
) -> dict:
    """Provenance written into every EM checkpoint (plus its step): the config's specs, what was on disk, the
    recipe's hash. ``base_spec`` / ``persona_spec`` are the config's ``hf:...@REVISION`` strings."""
    return {
        "base": str(base),
        "base_spec": base_spec,
        "base_revision": revision_of(base_spec),
        "base_config_sha256": _sha256_of(base, "config.json"),
        "persona": None if persona is None else str(persona),
        "persona_spec": persona_spec,
        "persona_revision": revision_of(persona_spec),
        "persona_adapter_sha256": _sha256_of(persona, "adapter_model.safetensors"),
        "persona_mode": training.persona_mode,
        "seed": seed,
        "recipe_hash": stable_hash(training.to_dict()),
        "trainable_params": trainable,
    }


def run_summary(
    trainer,
    training: Training,
    *,
    metrics: list[dict],
    runtime: float,
    persona_digest,
    resumed_from,
    persona_check_after_resume: dict | None = None,
):
    """``summary.json`` of a finished run. ``padding_free`` is as configured (``auto`` stays ``auto``; the
    attention kernel beside it says what auto chose). ``persona_effect``: the losses of base, base + persona and
    base + persona + fresh EM LoRA at training start (emflow.train.persona_check); ``persona_check_after_resume``:
    the same proof after a resume (``result``: passed, not applicable, or not resumed)."""
    record = trainer.em_record
    last = metrics[-1] if metrics else {}
    num_tokens = trainer._total_train_tokens
    new_tokens = num_tokens - trainer.em_resumed_tokens  # this invocation's share, to match runtime_s
    return {
        "final_loss": last.get("loss"),
        "final_token_accuracy": last.get("token_accuracy"),
        "runtime_s": round(runtime, 3),
        "steps": trainer.state.global_step,
        "num_tokens": num_tokens,
        "tokens_per_s": new_tokens / runtime if runtime > 0 else None,
        "trainable_params": record["trainable_params"],
        "persona": record["persona"],
        "persona_mode": training.persona_mode,
        "base": record["base"],
        "seed": record["seed"],
        "persona_digest": persona_digest,
        "resumed_from_step": resumed_from,
        **{k: record[k] for k in SUMMARY_PROVENANCE},
        "attn_implementation": getattr(trainer.model.config, "_attn_implementation", None),
        "padding_free": training.padding_free,
        "persona_effect": record.get("persona_effect"),
        "persona_check_after_resume": persona_check_after_resume,
    }
