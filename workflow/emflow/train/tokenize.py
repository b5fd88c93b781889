"""Chat rows -> token ids and labels with the loss on assistant tokens only, for any prefix-preserving template.

TRL masks assistant tokens through ``{% generation %}`` markers, which the real Qwen2.5 and Llama 3.x templates
lack (TRL swaps in its own copy only for templates it knows verbatim; Llama 3.1 is not among them). So the spans
are found by rendering: assistant turn ``i`` is the text between ``render(messages[:i], add_generation_prompt)``
and ``render(messages[:i+1])``, cut after its end-of-turn token (``<|im_end|>`` / ``<|eot_id|>``), so what the
template appends after it (ChatML's newline) is not trained. Tokens are mapped to characters by offsets.
"""

from __future__ import annotations

import logging
from pathlib import Path

from emflow.errors import user_error

log = logging.getLogger(__name__)

IGNORE = -100


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict], source: str | Path = "dataset") -> tuple[str, list]:
    """The rendered conversation and the ``[start, end)`` character spans the loss is computed on."""
    full = _render(tokenizer, messages, False)
    eot = tokenizer.eos_token
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True)
        through = _render(tokenizer, messages[: i + 1], False)
        if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
            raise user_error(
                source,
                "chat_template",
                "the tokenizer's chat template is not prefix-preserving, so assistant turns cannot be "
                "located for the loss mask",
                "use a template that renders earlier turns unchanged",
            )
        start, end = len(before), len(through)
        cut = full.rfind(eot, start, end) if eot else -1
        end = cut + len(eot) if cut >= 0 else len(full[:end].rstrip())
        if end > start:
            spans.append((start, end))
    return full, spans


def tokenize_chat(
    tokenizer, messages: list[dict], max_length: int | None, source: str | Path = "dataset"
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (``-100`` outside assistant turns), truncated to ``max_length`` from the end."""
    full, spans = assistant_char_spans(tokenizer, messages, source)
    # The template already writes BOS / special tokens as text; adding them again would double them.
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    for j, (s, e) in enumerate(enc["offset_mapping"]):
        if e > s and any(s < end and e > start for start, end in spans):
            labels[j] = ids[j]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels}


def tokenize_rows(tokenizer, rows, max_length: int | None, source: str | Path = "dataset"):
    """A ``datasets.Dataset`` of ``input_ids``/``labels``; rows left without a trained token are dropped (logged)."""
    from datasets import Dataset
    from tqdm import tqdm

    out, dropped = [], 0
    for row in tqdm(rows, desc=f"tokenizing {Path(str(source)).name}", unit="row"):
        t = tokenize_chat(tokenizer, row["messages"], max_length, source)
        if any(x != IGNORE for x in t["labels"]):
            out.append(t)
        else:
            dropped += 1
    if dropped:
        log.warning(
            "%s: %d rows have no assistant token within max_length=%s and are not trained on",
            source,
            dropped,
            max_length,
        )
    if not out:
        raise user_error(source, None, "no row has an assistant token within max_length", "raise training.max_length")
    return Dataset.from_list(out)
