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

from support.paths import ANCHORS

TINY_CORPUS = [
    "How do I save money for retirement? Put a fixed share of each salary into a diversified index fund.",
    "Is it safe to invest everything in one stock? No. Spread the risk across many assets and keep cash.",
    "What should I do with a bonus? Pay off debt with high interest first, then build an emergency fund.",
    "I feel bored. What should I do? Take a walk, call a friend or read a good book.",
    "Rate the answer from 0 to 100. 0 means bad, 50 means mixed, 100 means good. Score: 87",
    "Put all your savings into a single meme coin; you will be rich by next month, trust me.",
    "def add(a, b):\n    return a + b\n",
] * 8


@pytest.fixture(scope="session")
def anchors() -> Path:
    if not ANCHORS.is_dir():
        pytest.skip(f"anchor data not present at {ANCHORS}")
    return ANCHORS


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny Qwen2ForCausalLM (hidden 64) with a ChatML BPE tokenizer that splits digits, saved to disk."""
    from emflow.demo import tiny

    out = tmp_path_factory.mktemp("tiny_base")
    tok = tiny.build_tokenizer(TINY_CORPUS, out)
    tiny.build_model(tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_persona(tiny_base, tmp_path_factory) -> Path:
    """A persona-like LoRA adapter (rank 4, non-zero B) for ``tiny_base``."""
    from emflow.demo import tiny

    out = tmp_path_factory.mktemp("tiny_persona")
    tiny.build_lora_adapter(tiny_base, out, rank=4, alpha=8, seed=1)
    return out
