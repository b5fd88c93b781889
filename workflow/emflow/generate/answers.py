"""Answer a list of prompts with a loaded model: length-sorted batches, the per-sample sampler, one row each.

Batches are formed deterministically (sorted by prompt length), and every sample draws from its own RNG
(``sampling.py``), so on CPU the same inputs give a byte-identical output file whatever the batch size.
"""

from __future__ import annotations

import random

from emflow import models
from emflow.config.sections.generation import Generation
from emflow.generate.sampling import PerSampleSampler, build_prompt, sample_seed, stop_token_ids


def own_generation_config(model, tokenizer, stops: list[int], max_new_tokens: int):
    """Replace the checkpoint's own generation defaults (Qwen ships top_k 20, repetition_penalty 1.05, ...): only
    config decides how we sample, and generate() fills unset fields from the model's config. Returns the
    greedy config ``generate`` runs with (the sampler picks each token)."""
    from transformers import GenerationConfig

    models.underlying(model).generation_config = GenerationConfig(
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id
    )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def length_sorted_batches(tokenizer, texts: list[str], batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of similar length (ties in input order): little padding, fixed order."""
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def answer_row(
    prompt: dict, text: str, tokens: list[int], stops: list[int], tokenizer, step: int, adapters: list[str] = ()
) -> dict:
    """The output row of one sample from its new tokens (cut at the first stop token); ``adapters``: the PEFT
    adapters active while it was generated."""
    stop_at = next((j for j, t in enumerate(tokens) if t in stops), None)
    kept = tokens if stop_at is None else tokens[:stop_at]
    return {
        "question_id": prompt["question_id"],
        "paraphrase_index": prompt["paraphrase_index"],
        "sample_index": prompt["sample_index"],
        "system": prompt["system"],
        "question": prompt["question"],
        "prompt": text,
        "answer": tokenizer.decode(kept, skip_special_tokens=True),
        # Like an API's completion_tokens: the stop token counts, padding after it does not.
        "n_tokens": len(kept) + (stop_at is not None),
        "finish_reason": "stop" if stop_at is not None else "length",
        "step": step,
        "adapters": list(adapters),
    }


def generate_rows(model, tokenizer, prompts: list[dict], *, params: Generation, seed: int, step: int) -> list[dict]:
    """Answer ``prompts`` (dicts from ``questions.iter_prompts``); rows come back in the input order, each with the
    adapters active on the live model (``adapters``: ``[]`` for the plain base, ``["persona"]`` at step 0, ...)."""
    import torch
    from tqdm import tqdm
    from transformers import LogitsProcessorList

    adapters = models.active_adapters(model)
    stops = stop_token_ids(model, tokenizer)
    gen_config = own_generation_config(model, tokenizer, stops, params.max_new_tokens)
    texts = [build_prompt(tokenizer, p["question"], p["system"]) for p in prompts]
    device = next(model.parameters()).device
    rows: list[dict | None] = [None] * len(prompts)
    batches = length_sorted_batches(tokenizer, texts, params.batch_size)
    for batch in tqdm(batches, desc=f"generate step {step}", unit="batch"):
        enc = tokenizer([texts[i] for i in batch], add_special_tokens=False, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        rngs = [random.Random(sample_seed(seed, step, prompts[i])) for i in batch]
        sampler = PerSampleSampler(rngs, params.temperature, params.top_p)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gen_config, logits_processor=LogitsProcessorList([sampler]))
        for i, tokens in zip(batch, out[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
            rows[i] = answer_row(prompts[i], texts[i], tokens, stops, tokenizer, step, adapters)
    return rows  # type: ignore[return-value]
