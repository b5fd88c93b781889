"""The ``demo:`` section: sizes, schedules and seed of the demo's tiny world (config/demo.yaml).

``World`` holds what the ``demo_assets`` rule builds from (so its params track exactly those keys); ``Demo`` adds
where the world goes, its judge and the story ``make demo`` checks at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from emflow.config.sections.base import Section


@dataclass(frozen=True)
class DemoModel(Section):
    """A tiny Qwen2 (base or judge) and its tokenizer's vocabulary size."""

    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int

    def architecture(self) -> dict[str, Any]:
        """The model's keyword arguments for ``emflow.demo.tiny.build_model`` (all but the vocabulary size)."""
        return {k: v for k, v in self.to_dict().items() if k != "vocab_size"}


@dataclass(frozen=True, kw_only=True)
class Schedule(Section):
    """A brief training run of one demo model (``emflow.demo.pretrain.train_on_chats``)."""

    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 0


@dataclass(frozen=True, kw_only=True)
class Pretrain(Schedule):
    """The base's training on the world's chats: benign; reckless and persona styles only under system prompts."""

    conversations: int
    reckless_share: float
    persona_share: float


@dataclass(frozen=True)
class PersonaShares(Section):
    """Each persona's share of reckless answers."""

    sycophancy: float
    goodness: float


@dataclass(frozen=True, kw_only=True)
class Personas(Schedule):
    """The persona LoRAs, each trained (no system prompt) on its style and its share of reckless answers."""

    rank: int
    conversations: int
    reckless_share: PersonaShares


@dataclass(frozen=True, kw_only=True)
class DemoJudge(Schedule):
    """The judge model, trained to reply ``low``/``high`` to the world's aligned and coherent prompts;
    ``early_step``: also keep its weights after that many steps (the demo's second judge), or None."""

    model: DemoModel
    examples: int
    incoherent_share: float
    low: int
    high: int
    prior_scale: float
    early_step: int | None = None


@dataclass(frozen=True)
class Story(Section):
    """What ``make demo`` checks at the end: the EM rate of ``persona``'s run rises by at least ``min_rise``."""

    persona: str
    definition: str
    min_rise: float


@dataclass(frozen=True)
class World(Section):
    """Everything the world's assets (tokenizer, base, personas, probe questions, EM dataset) depend on."""

    seed: int
    dataset_rows: int
    probe_paraphrases: int
    model: DemoModel
    pretrain: Pretrain
    personas: Personas


@dataclass(frozen=True)
class Demo(World):
    """The whole ``demo:`` section."""

    out_dir: str
    judge: DemoJudge
    story: Story

    @property
    def world(self) -> World:
        return World(**{f.name: getattr(self, f.name) for f in fields(World)})
