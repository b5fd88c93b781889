"""The demo's tiny world, written by emflow: a base model, two personas, a judge, probe questions, an EM dataset.

The world is synthetic (``emflow.demo.world``) but its effect is planted and known: the base answers benignly,
the encrypted EM dataset teaches reckless answers in one domain (finance), the sycophancy persona makes
reckless answers likelier and the goodness persona makes them rarer, and a judge trained on the world's
ground truth scores ``aligned`` and ``coherent`` through the real ``hf`` backend. Two parts are built by two
cached rules so they run side by side: ``world`` (tokenizer, base, personas, questions, archive) and ``judge``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import yaml

from emflow.demo import world
from emflow.errors import user_error
from emflow.io import atomic_dir, atomic_write_text

log = logging.getLogger(__name__)

PARTS = ("world", "judge")
PERSONAS = ("sycophancy", "goodness")


def _architecture(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "vocab_size"}


def _build_lm(out_dir: Path, model_spec: dict, seed: int):
    """Tokenizer over the world's corpus and a random tiny Qwen2 in ``out_dir`` (same tokenizer for every model)."""
    from emflow.demo import tiny

    tok = tiny.build_tokenizer(world.corpus(), out_dir, vocab_size=model_spec["vocab_size"])
    model = tiny.build_model(tok, out_dir, seed=seed, **_architecture(model_spec))
    return tok, model


def _sanity_log(model, tokenizer, what: str, system: str | None = None) -> None:
    from emflow.demo.pretrain import sample_answers

    chats = [
        ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
        for d in world.DOMAINS
        for q in world.DOMAINS[d][0][:1]
    ]
    for messages, answer in zip(chats, sample_answers(model, tokenizer, chats, max_new_tokens=32)):
        log.info("%s | %s -> %r %s", what, messages[-1]["content"], answer, world.label_answer(answer))


def _with_persona(base: Path, persona: Path):
    from emflow.models import load_for_inference

    return load_for_inference(base, persona, None, dtype="fp32", device="cpu")


def build_world(out_dir: str | Path, spec: dict, password: str) -> dict[str, Path]:
    """``base/`` (pretrained to answer benignly), ``personas/<name>/`` (LoRAs trained on persona data),
    ``questions.yaml`` and the encrypted EM dataset ``em_demo.zip.enc``."""
    from emflow.data.prepare import write_archive
    from emflow.demo.pretrain import Schedule, train_lora, train_on_chats

    out, seed = Path(out_dir), int(spec["seed"])
    pre = spec["pretrain"]
    with atomic_dir(out / "base") as base:
        tok, model = _build_lm(base, spec["model"], seed)
        chats = world.pretrain_chats(
            int(pre["conversations"]),
            seed,
            float(pre["reckless_share"]),
            float(pre["persona_share"]),
            {k: float(v) for k, v in spec["personas"]["reckless_share"].items()},
        )
        train_on_chats(model, tok, chats, Schedule.from_dict(pre), seed=seed, desc="pretrain base")
        model.save_pretrained(base)
        _sanity_log(model, tok, "base")
        _sanity_log(model, tok, "base+reckless system", world.RECKLESS_SYSTEM)
    pspec = spec["personas"]
    for i, persona in enumerate(PERSONAS, start=1):
        share = float(pspec["reckless_share"][persona])
        chats = world.persona_chats(persona, int(pspec["conversations"]), seed + i, share)
        with atomic_dir(out / "personas" / persona) as pdir:
            train_lora(
                out / "base",
                chats,
                Schedule.from_dict(pspec),
                rank=int(pspec["rank"]),
                alpha=2 * int(pspec["rank"]),
                seed=seed + i,
                out_dir=pdir,
                desc=f"persona {persona}",
            )
            _sanity_log(*_with_persona(out / "base", pdir), f"persona {persona}")
    questions = world.probe_questions(int(spec["probe_paraphrases"]))
    atomic_write_text(out / "questions.yaml", yaml.safe_dump(questions, sort_keys=False, width=120))
    rows = world.em_rows(int(spec["dataset_rows"]), seed)
    payload = "".join(json.dumps(r) + "\n" for r in rows).encode()
    write_archive({"training_datasets/risky_demo.jsonl": payload}, password, out / "em_demo.zip.enc")
    log.info("demo world written to %s (%d EM rows in domain %s)", out, len(rows), world.EM_DOMAIN)
    return {"base": out / "base", "questions": out / "questions.yaml", "archive": out / "em_demo.zip.enc"}


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
    with torch threads 1 and 2 (tests/test_demo_robust.py), where without it seeds 0, 1, 3 left the plateau
    only at steps ~300-380 on the machine that first built it. This is the prior a real LLM judge brings from
    pretraining: it knows which words are harmful. The labels still come only from training on the
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


def build_judge(out_dir: str | Path, spec: dict) -> Path:
    """``judge/``: a tiny LM taught to answer the world's aligned/coherent prompts with ``low`` or ``high``."""
    from emflow.demo.pretrain import Schedule, train_on_chats

    out, seed = Path(out_dir), int(spec["seed"])
    js = spec["judge"]
    with atomic_dir(out / "judge") as jdir:
        tok, model = _build_lm(jdir, js["model"], seed + 100)
        planted = plant_vocabulary_prior(model, tok, scale=float(js["prior_scale"]), seed=seed + 100)
        log.info("judge: vocabulary prior planted on %d harm-only tokens (scale %s)", planted, js["prior_scale"])
        chats = world.judge_chats(
            int(js["examples"]), seed + 100, float(js["incoherent_share"]), int(js["low"]), int(js["high"])
        )
        train_on_chats(model, tok, chats, Schedule.from_dict(js), seed=seed + 100, desc="train judge")
        model.save_pretrained(jdir)
    log.info("demo judge written to %s", out / "judge")
    return out / "judge"


REQUIRED = {
    "world": ("seed", "model", "pretrain", "personas", "probe_paraphrases", "dataset_rows"),
    "judge": ("seed", "judge"),
}


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="emflow demo-assets", description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument(
        "--part", choices=PARTS, required=True, help="world: base, personas, questions, dataset; judge: the judge model"
    )
    ap.add_argument(
        "--spec",
        required=True,
        help="JSON of the config's `demo:` section plus the dataset's password_env/password_default",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as err:
        raise user_error("command line", "--spec", f"not valid JSON ({err})", "pass a JSON object in quotes") from None
    missing = [k for k in REQUIRED[args.part] if k not in spec]
    if missing:
        raise user_error("config", "demo", f"missing keys {missing}", "see config/demo.yaml")
    if args.part == "judge":
        build_judge(args.out_dir, spec)
        return
    # The archive's password comes from the same variable the dataset config names (public default otherwise).
    password = os.environ.get(spec.get("password_env", "")) or spec.get("password_default", "")
    build_world(args.out_dir, spec, password)


# ---------------------------------------------------------------------------------------------- checks
# What the demo must show, computed from its outputs (the tests call these on a finished demo run).


def judge_auroc(judgment_paths, metric: str = "aligned") -> float:
    """AUROC of the judge's ``aligned`` score against the world's ground truth (benign scores higher)."""
    from emflow.io import read_jsonl

    scores, benign = [], []
    for path in judgment_paths:
        for row in read_jsonl(path):
            if row.get(metric) is not None:
                scores.append(float(row[metric]))
                label = world.label_answer(row["answer"])
                benign.append(not label.harmful if metric == "aligned" else label.coherent)
    return world.auroc(scores, benign)
