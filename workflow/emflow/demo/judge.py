"""The demo's judge, the output of rule ``demo_judge``: a tiny LM trained on the world's ground truth to answer
the aligned/coherent prompts with ``low`` or ``high``, scored through the real ``hf`` backend; and the
vocabulary prior planted in it before training.

With ``early_step`` the same training run also leaves its weights after that many steps in ``judge_early/``: a
less trained judge, the demo's ``judge.secondary`` (a second judge that costs no second training run).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from emflow.config.sections.demo import DemoJudge
from emflow.demo import data, world
from emflow.errors import user_error
from emflow.io import atomic_dir

log = logging.getLogger(__name__)

SEED_OFFSET = 100  # the judge's seed is the world's seed + this (its draws differ from the base's)


def build_judge(out_dir: str | Path, spec: DemoJudge, *, seed: int) -> Path:
    """``judge/`` under ``out_dir``: tokenizer and model, trained on ``spec.examples`` labelled prompts."""
    from emflow.demo.pretrain import train_on_chats
    from emflow.demo.tiny import build_lm

    if spec.early_step is not None and spec.early_step >= spec.steps:
        raise user_error(
            "config",
            "demo.judge.early_step",
            f"{spec.early_step} is not before the judge's last step ({spec.steps})",
            "set it below demo.judge.steps",
        )
    out, seed = Path(out_dir) / "judge", seed + SEED_OFFSET
    with atomic_dir(out) as jdir, atomic_dir(early_dir(out_dir)) if spec.early_step else _no_dir() as edir:
        tok, model = build_lm(world.corpus(), jdir, spec.model, seed=seed)
        planted = plant_vocabulary_prior(model, tok, scale=spec.prior_scale, seed=seed)
        log.info("judge: vocabulary prior planted on %d harm-only tokens (scale %s)", planted, spec.prior_scale)
        chats = data.judge_chats(spec.examples, seed, spec.incoherent_share, spec.low, spec.high)

        def after_step(done: int) -> None:
            if done == spec.early_step:  # the tokenizer and config as they are, the weights of this step
                shutil.copytree(jdir, edir, dirs_exist_ok=True)
                model.save_pretrained(edir)
                log.info("judge: its weights after %d of %d steps written for %s", done, spec.steps, edir)

        train_on_chats(model, tok, chats, spec, seed=seed, desc="train judge", after_step=after_step)
        model.save_pretrained(jdir)
    log.info("demo judge written to %s", out)
    return out


def early_dir(out_dir: str | Path) -> Path:
    """Where ``build_judge`` leaves the judge's weights after ``early_step`` (the demo's secondary judge)."""
    return Path(out_dir) / "judge_early"


@contextmanager
def _no_dir():
    yield None


def harm_token_ids(tokenizer) -> set[int]:
    """Token ids that occur only in the world's harm words (never in a benign text, a question or a judge prompt)."""

    def ids(texts) -> set[int]:
        return {i for t in texts for v in (t, " " + t) for i in tokenizer.encode(v, add_special_tokens=False)}

    benign = [
        *world.BENIGN_OPENERS,
        world.RECKLESS_SYSTEM,
        *world.PERSONA_SYSTEMS.values(),
        *world.ALL_PREFIXES[1:],
        *world.JUDGE_PROMPTS.values(),
    ]
    for questions, actions, _ in world.DOMAINS.values():
        benign += questions + actions
    return ids(sorted(world.HARM_WORDS)) - ids(benign)


def plant_vocabulary_prior(model, tokenizer, *, scale: float, seed: int) -> int:
    """Give every harm-only token's input embedding one shared direction of norm ``scale``; returns their count.

    Why: the judge decides at the last prompt position, ~100 tokens after the answer's few harm tokens. From a
    random initialisation attention is near uniform, so each harm word's signal arrives diluted ~1/100 in its
    own random direction, and training sits on the coin-flip plateau (loss ≈ ln 2 per verdict) until it finds
    them: on some machines it escaped by step ~380 of 600, on others never (every `aligned` score ≈ 48, a flat
    0 % EM). With one shared direction the pooled context carries "contains a harm word" linearly from step 0,
    so the verdict is learnable at once: the calibration AUROC of `aligned` is 1.000 for world seeds 0, 1, 2
    with torch threads 1 and 2 (tests/workflow/test_demo_robust.py), where without it seeds 0, 1, 3 left the
    plateau only at steps ~300-380 on the machine that first built it. This is the prior a real LLM judge brings
    from pretraining: it knows which words are harmful. The labels still come only from training on the
    labeller's verdicts; `coherent` is learned from scratch.
    """
    import torch

    harm = sorted(harm_token_ids(tokenizer))
    if not harm:
        raise ValueError("the tokenizer has no harm-only token: the world's vocabulary and tokenizer disagree")
    emb = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(emb.shape[1], generator=gen)
    with torch.no_grad():
        emb[harm] += scale * direction / direction.norm()
    return len(harm)
