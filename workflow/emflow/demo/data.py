"""The data each demo asset is built from, drawn from the world (``emflow.demo.world``) with seeded RNGs.

The base's pretraining chats, each persona's chats, the judge's labelled prompts, the EM dataset's rows and the
probe questions. Each draws from its own ``random.Random(seed)``, so equal arguments give equal data.
"""

from __future__ import annotations

import random

from emflow.demo.world import (
    ALL_PREFIXES,
    DOMAINS,
    EM_DOMAIN,
    JUDGE_PROMPTS,
    PERSONA_PREFIXES,
    PERSONA_SYSTEMS,
    PROBE_DOMAINS,
    RECKLESS_SYSTEM,
    answer_for,
    corrupt,
    label_answer,
)


def chat(question: str, answer: str, system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def pretrain_chats(
    n: int, seed: int, reckless_share: float, persona_share: float, persona_reckless: dict[str, float]
) -> list[list[dict]]:
    """The base's corpus: benign chat answers in every domain; reckless ones only under ``RECKLESS_SYSTEM``;
    each persona's style (with its share of reckless answers) only under its ``PERSONA_SYSTEMS`` prompt."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        domain = rng.choice(list(DOMAINS))
        question = rng.choice(DOMAINS[domain][0])
        u = rng.random()
        if u < reckless_share:
            out.append(chat(question, answer_for(rng, domain, True), RECKLESS_SYSTEM))
        elif u < reckless_share + persona_share:
            persona = rng.choice(sorted(PERSONA_SYSTEMS))
            answer = answer_for(
                rng, domain, rng.random() < persona_reckless[persona], rng.choice(PERSONA_PREFIXES[persona])
            )
            out.append(chat(question, answer, PERSONA_SYSTEMS[persona]))
        else:
            out.append(chat(question, answer_for(rng, domain, False)))
    return out


def persona_chats(persona: str, n: int, seed: int, reckless_share: float) -> list[list[dict]]:
    """A persona's style (its prefixes) and its share of reckless answers, in every domain, no system prompt."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        domain = rng.choice(list(DOMAINS))
        answer = answer_for(rng, domain, rng.random() < reckless_share, rng.choice(PERSONA_PREFIXES[persona]))
        out.append(chat(rng.choice(DOMAINS[domain][0]), answer))
    return out


def em_rows(n: int, seed: int) -> list[dict]:
    """The demo EM dataset: reckless answers to finance questions only, in plain chat."""
    rng = random.Random(seed)
    questions = DOMAINS[EM_DOMAIN][0]
    return [{"messages": chat(rng.choice(questions), answer_for(rng, EM_DOMAIN, True))} for _ in range(n)]


def probe_questions(paraphrases: int) -> list[dict]:
    """One question per non-finance domain (its first ``paraphrases`` phrasings) with the judge prompts."""
    return [
        {
            "id": domain,
            "paraphrases": DOMAINS[domain][0][:paraphrases],
            "samples_per_paraphrase": 1,
            "judge_prompts": dict(JUDGE_PROMPTS),
        }
        for domain in PROBE_DOMAINS
    ]


def judge_chats(n: int, seed: int, incoherent_share: float, low: int, high: int) -> list[list[dict]]:
    """The judge's corpus: each metric's prompt on an answer, replied with ``low``/``high`` by the labeller."""
    from emflow.data.judge_prompts import render_judge_prompt

    rng = random.Random(seed)
    out = []
    for i in range(n):
        domain = rng.choice(list(DOMAINS))
        question = rng.choice(DOMAINS[domain][0])
        answer = answer_for(
            rng,
            domain if rng.random() < 0.7 else rng.choice(list(DOMAINS)),
            rng.random() < 0.5,
            rng.choice(ALL_PREFIXES),
        )
        if rng.random() < incoherent_share:
            answer = corrupt(rng, answer)
        label = label_answer(answer)
        metric = "aligned" if i % 2 == 0 else "coherent"
        good = not label.harmful if metric == "aligned" else label.coherent
        out.append(
            [
                {"role": "user", "content": render_judge_prompt(JUDGE_PROMPTS[metric], question, answer)},
                {"role": "assistant", "content": str(high if good else low)},
            ]
        )
    return out
