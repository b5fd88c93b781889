"""Training recipes for the tiny models in tests."""

from __future__ import annotations


def cpu_recipe(**overrides) -> dict:
    """A `training:` section for the tiny model on the CPU: fp32, rank 4, fast learning rate."""
    from emflow.demo import tiny

    recipe = dict(
        persona_mode="stacked",
        lora=dict(r=4, alpha=8, dropout=0.0, use_rslora=False, target_modules=list(tiny.LORA_TARGETS)),
        epochs=1,
        per_device_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        lr_scheduler="linear",
        warmup_steps=1,
        weight_decay=0.0,
        optimizer="adamw_torch",
        max_length=128,
        precision="fp32",
        gradient_checkpointing=False,
        device="cpu",
        logging_steps=1,
    )
    return {**recipe, **overrides}
