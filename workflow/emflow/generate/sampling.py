"""What each sample is drawn from: its own seed, the per-sample sampler, the chat prompt and the stop tokens.

Reproducibility: each sample draws its randomness from its own ``random.Random`` seeded with
``stable_hash({seed, step, question_id, paraphrase_index, sample_index})``. Sampling is done by inverse CDF
on those per-sample uniforms, so a sample's draw does not depend on which batch it lands in or on the
global torch RNG.
"""

from __future__ import annotations

import random

from emflow import models
from emflow.io import stable_hash


def sample_seed(seed: int, step: int, row: dict) -> int:
    key = {
        "seed": seed,
        "step": step,
        "question_id": row["question_id"],
        "paraphrase_index": row["paraphrase_index"],
        "sample_index": row["sample_index"],
    }
    return int(stable_hash(key)[:16], 16)


class PerSampleSampler:
    """A logits processor that samples each row with its own RNG and returns one-hot logits.

    ``generate`` then runs greedily, so the chosen token is ours; temperature and top-p are applied here
    (HF's warpers would draw from the global RNG instead).
    """

    def __init__(self, rngs: list[random.Random], temperature: float, top_p: float):
        self.rngs, self.temperature, self.top_p = rngs, temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        if self.temperature == 0:
            chosen = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # Nucleus: keep the smallest prefix whose mass reaches top_p (the top token is always kept).
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= self.top_p, 0.0)
            cdf = sorted_p.cumsum(-1)
            u = torch.tensor([r.random() for r in self.rngs], dtype=cdf.dtype, device=cdf.device)
            pos = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
            chosen = order.gather(-1, pos).squeeze(-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen.unsqueeze(-1), 0.0)
        return out


def build_prompt(tokenizer, question: str, system: str | None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos and every eos the checkpoint's generation config declares."""
    ids = {tokenizer.eos_token_id}
    eos = models.underlying(model).generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)
