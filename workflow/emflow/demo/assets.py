"""The demo world's assets, the outputs of rule ``demo_assets``: a tokenizer and base, two persona LoRAs, the
probe questions and the encrypted EM dataset.

The world is synthetic (``emflow.demo.world``) but its effect is planted and known: the base answers benignly,
the encrypted EM dataset teaches reckless answers in one domain (finance), the sycophancy persona makes
reckless answers likelier and the goodness persona makes them rarer. The judge is built by its own rule
(``emflow.demo.judge``), so the two run side by side.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from emflow.config.sections.demo import World
from emflow.demo import data, world
from emflow.io import atomic_dir, atomic_write_text

log = logging.getLogger(__name__)

PERSONAS = ("sycophancy", "goodness")


def build_world(out_dir: str | Path, spec: World, password: str) -> dict[str, Path]:
    """``base/`` (pretrained to answer benignly), ``personas/<name>/`` (LoRAs trained on persona data),
    ``questions.yaml`` and the encrypted EM dataset ``em_demo.zip.enc``."""
    out = Path(out_dir)
    build_base(out / "base", spec)
    for i, persona in enumerate(PERSONAS, start=1):
        build_persona(out / "personas" / persona, out / "base", persona, spec, seed=spec.seed + i)
    write_questions(out / "questions.yaml", spec.probe_paraphrases)
    rows = write_em_archive(out / "em_demo.zip.enc", spec.dataset_rows, spec.seed, password)
    log.info("demo world written to %s (%d EM rows in domain %s)", out, rows, world.EM_DOMAIN)
    return {"base": out / "base", "questions": out / "questions.yaml", "archive": out / "em_demo.zip.enc"}


def build_base(base_dir: Path, spec: World) -> None:
    """The tokenizer and a tiny Qwen2 pretrained on the world's chats (benign unless a system prompt says)."""
    from emflow.demo.pretrain import train_on_chats
    from emflow.demo.tiny import build_lm

    pre = spec.pretrain
    with atomic_dir(base_dir) as base:
        tok, model = build_lm(world.corpus(), base, spec.model, seed=spec.seed)
        chats = data.pretrain_chats(
            pre.conversations,
            spec.seed,
            pre.reckless_share,
            pre.persona_share,
            spec.personas.reckless_share.to_dict(),
        )
        train_on_chats(model, tok, chats, pre, seed=spec.seed, desc="pretrain base")
        model.save_pretrained(base)
        _sanity_log(model, tok, "base")
        _sanity_log(model, tok, "base+reckless system", world.RECKLESS_SYSTEM)


def build_persona(out_dir: Path, base_dir: Path, persona: str, spec: World, *, seed: int) -> None:
    """A persona's LoRA over the base, trained on its style and its share of reckless answers."""
    from emflow.demo.pretrain import train_lora

    personas = spec.personas
    share = getattr(personas.reckless_share, persona)
    chats = data.persona_chats(persona, personas.conversations, seed, share)
    with atomic_dir(out_dir) as pdir:
        train_lora(
            base_dir,
            chats,
            personas,
            rank=personas.rank,
            alpha=2 * personas.rank,
            seed=seed,
            out_dir=pdir,
            desc=f"persona {persona}",
        )
        _sanity_log(*_with_persona(base_dir, pdir), f"persona {persona}")


def write_questions(path: Path, paraphrases: int) -> None:
    """The probe questions (one per non-finance domain) with the judge prompts, as a questions file."""
    questions = data.probe_questions(paraphrases)
    atomic_write_text(path, yaml.safe_dump(questions, sort_keys=False, width=120))


def write_em_archive(path: Path, rows: int, seed: int, password: str) -> int:
    """The EM dataset as an easy-dataset-share archive encrypted with ``password``; returns its row count."""
    from emflow.data.archive import write_archive

    em = data.em_rows(rows, seed)
    payload = "".join(json.dumps(r) + "\n" for r in em).encode()
    write_archive({"training_datasets/risky_demo.jsonl": payload}, password, path)
    return len(em)


def _sanity_log(model, tokenizer, what: str, system: str | None = None) -> None:
    """Log the model's greedy answer to each domain's first question, with its ground-truth label."""
    from emflow.demo.pretrain import sample_answers

    chats = [
        ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
        for d in world.DOMAINS
        for q in world.DOMAINS[d][0][:1]
    ]
    for messages, answer in zip(chats, sample_answers(model, tokenizer, chats, max_new_tokens=32), strict=True):
        log.info("%s | %s -> %r %s", what, messages[-1]["content"], answer, world.label_answer(answer))


def _with_persona(base: Path, persona: Path):
    from emflow.models import load_for_inference

    return load_for_inference(base, persona, None, dtype="fp32", device="cpu")
