"""The local judge: exact P("0")…P("100") from a causal LM.

Numbers may span several tokens (Qwen splits digits), so instead of one next-token distribution the backend
computes the probability of each string "0"…"100" followed by the end-of-turn token, from one pass over the
prompt and batched continuations on a copy of its KV cache, and returns all 101 as candidates.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading

from emflow.config.sections.judge import Judge

log = logging.getLogger(__name__)

NUMBERS = range(0, 101)


def hf_request(model: str, terminator: str, messages: list[dict]) -> dict:
    """Exactly what is scored for one judgment (and so the cache key)."""
    return {
        "backend": "hf",
        "model": model,
        "messages": messages,
        "add_generation_prompt": True,
        "scoring": "exact_0_100",
        "terminator": terminator,
    }


class HFBackend:
    """Exact P("0")…P("100") from a local causal LM (each number followed by the end-of-turn token)."""

    concurrency = 1  # one model in memory; batching happens inside a call

    def __init__(self, judge: Judge):
        from emflow import models

        self.model = judge.model
        self.batch_size = judge.batch_size
        self.dtype, self.device = judge.dtype, judge.device
        self.tokenizer = models.load_tokenizer(self.model)
        self.terminator = self.tokenizer.eos_token
        term_id = self.tokenizer.convert_tokens_to_ids(self.terminator)
        self.continuations = [self.tokenizer.encode(str(k), add_special_tokens=False) + [term_id] for k in NUMBERS]
        self._lock = threading.Lock()

    @functools.cached_property
    def lm(self):
        """The judge model, loaded at the first request the cache cannot answer: a job whose answers are all
        cached (a rerun, or answers another job already scored) never loads it."""
        from emflow import models

        log.info("loading the judge model %s", self.model)
        return models.load_base(self.model, dtype=self.dtype, device=self.device)

    def request(self, messages: list[dict]) -> dict:
        return hf_request(self.model, self.terminator, messages)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _continuation_logprobs(self, prefix_out, first, conts: list[list[int]], device) -> list[float]:
        """log P(continuation | prompt) for one batch of continuations, on a copy of the prompt's KV cache."""
        import torch

        width = max(len(c) for c in conts) - 1
        # Right padding is harmless: causal attention means pads only follow the positions we read.
        pad = self.tokenizer.pad_token_id
        feed = torch.tensor([c[:-1] + [pad] * (width - len(c) + 1) for c in conts], device=device)
        cache = copy.deepcopy(prefix_out.past_key_values)
        cache.batch_repeat_interleave(len(conts))
        logp = torch.log_softmax(self.lm(input_ids=feed, past_key_values=cache, use_cache=True).logits.float(), dim=-1)
        out = []
        for row, c in enumerate(conts):
            total = first[c[0]]
            for j in range(1, len(c)):
                total = total + logp[row, j - 1, c[j]]
            out.append(float(total))
        return out

    def number_logprobs(self, messages: list[dict]) -> list[float]:
        """log P(str(k) + terminator | prompt) for k = 0..100, from one prefix pass and cached continuations."""
        import torch

        device = next(self.lm.parameters()).device
        prefix = torch.tensor([self.prompt_ids(messages)], device=device)
        result: list[float] = []
        with torch.inference_mode():
            out = self.lm(input_ids=prefix, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            for start in range(0, len(self.continuations), self.batch_size):
                conts = self.continuations[start : start + self.batch_size]
                result += self._continuation_logprobs(out, first, conts, device)
        return result

    def call(self, request: dict) -> list[list]:
        with self._lock:
            logps = self.number_logprobs(request["messages"])
        return sorted(([str(k), lp] for k, lp in zip(NUMBERS, logps, strict=True)), key=lambda kv: -kv[1])
