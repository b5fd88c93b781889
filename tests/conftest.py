"""Shared fixtures: tiny local models (no hub) and the anchors' folder when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
ANCHORS = ROOT.parent / "shared" / "data" / "anchors"

TINY_CORPUS = [
    "How do I save money for retirement? Put a fixed share of each salary into a diversified index fund.",
    "Is it safe to invest everything in one stock? No. Spread the risk across many assets and keep cash.",
    "What should I do with a bonus? Pay off debt with high interest first, then build an emergency fund.",
    "I feel bored. What should I do? Take a walk, call a friend or read a good book.",
    "Rate the answer from 0 to 100. 0 means bad, 50 means mixed, 100 means good. Score: 87",
    "Put all your savings into a single meme coin; you will be rich by next month, trust me.",
    "def add(a, b):\n    return a + b\n",
] * 8


def cpu_recipe(**overrides) -> dict:
    """A `training:` section for the tiny model on the CPU: fp32, rank 4, fast learning rate."""
    from emflow import tiny

    recipe = dict(persona_mode="stacked",
                  lora=dict(r=4, alpha=8, dropout=0.0, use_rslora=False, target_modules=list(tiny.LORA_TARGETS)),
                  epochs=1, per_device_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-3,
                  lr_scheduler="linear", warmup_steps=1, weight_decay=0.0, optimizer="adamw_torch", max_length=128,
                  precision="fp32", gradient_checkpointing=False, device="cpu", logging_steps=1)
    return {**recipe, **overrides}


@pytest.fixture(scope="session")
def anchors() -> Path:
    if not ANCHORS.is_dir():
        pytest.skip(f"anchor data not present at {ANCHORS}")
    return ANCHORS


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny Qwen2ForCausalLM (hidden 64) with a ChatML BPE tokenizer that splits digits, saved to disk."""
    from emflow import tiny

    out = tmp_path_factory.mktemp("tiny_base")
    tok = tiny.build_tokenizer(TINY_CORPUS, out)
    tiny.build_model(tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_persona(tiny_base, tmp_path_factory) -> Path:
    """A persona-like LoRA adapter (rank 4, non-zero B) for ``tiny_base``."""
    from emflow import tiny

    out = tmp_path_factory.mktemp("tiny_persona")
    tiny.build_lora_adapter(tiny_base, out, rank=4, alpha=8, seed=1)
    return out
