"""Answer every probe question × paraphrase × sample with base + persona (+ EM checkpoint).

Reproducibility: each sample draws its randomness from its own ``random.Random`` seeded with
``stable_hash({seed, step, question_id, paraphrase_index, sample_index})``. Sampling is done by inverse CDF
on those per-sample uniforms, so a sample's draw does not depend on which batch it lands in or on the
global torch RNG; batches are formed deterministically (sorted by prompt length), so on CPU the same inputs
give a byte-identical output file.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

from emflow import models
from emflow.errors import user_error
from emflow.io import stable_hash, write_jsonl

log = logging.getLogger(__name__)

PARAM_KEYS = {"max_new_tokens", "temperature", "top_p", "batch_size", "device", "dtype"}
REQUIRED_PARAMS = {"max_new_tokens", "temperature", "top_p", "batch_size"}
SELECT_KEYS = {"ids", "samples_per_paraphrase"}


def check_params(params: dict, source: str = "config") -> dict:
    unknown = set(params) - PARAM_KEYS
    if unknown:
        raise user_error(source, "generation", f"unknown keys {sorted(unknown)}", f"use only {sorted(PARAM_KEYS)}")
    missing = REQUIRED_PARAMS - set(params)
    if missing:
        raise user_error(source, "generation", f"missing keys {sorted(missing)}", "set them in config.yaml")
    if int(params["max_new_tokens"]) < 1 or int(params["batch_size"]) < 1:
        raise user_error(source, "generation", "max_new_tokens and batch_size must be >= 1")
    if float(params["temperature"]) < 0:
        raise user_error(source, "generation.temperature", "must be >= 0", "0 means greedy decoding")
    if not 0 < float(params["top_p"]) <= 1:
        raise user_error(source, "generation.top_p", "must be in (0, 1]")
    return {"device": "auto", "dtype": "auto", **params}


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
    ids = {tokenizer.eos_token_id}
    eos = models.underlying(model).generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos])
    return sorted(i for i in ids if i is not None)


def generate_rows(model, tokenizer, prompts: list[dict], *, params: dict, seed: int, step: int) -> list[dict]:
    """Answer ``prompts`` (dicts from ``questions.iter_prompts``); rows come back in the input order."""
    import torch
    from tqdm import tqdm
    from transformers import GenerationConfig, LogitsProcessorList

    params = check_params(params)
    stops = stop_token_ids(model, tokenizer)
    # Replace the checkpoint's own generation defaults (Qwen ships top_k 20, repetition_penalty 1.05, ...):
    # only config decides how we sample, and generate() fills unset fields from the model's config.
    hf_model = models.underlying(model)
    hf_model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    gen_config = GenerationConfig(
        max_new_tokens=int(params["max_new_tokens"]),
        do_sample=False,
        num_beams=1,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    texts = [build_prompt(tokenizer, p["question"], p["system"]) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    bs = int(params["batch_size"])
    batches = [order[i : i + bs] for i in range(0, len(order), bs)]
    device = next(model.parameters()).device
    rows: list[dict | None] = [None] * len(prompts)
    for batch in tqdm(batches, desc=f"generate step {step}", unit="batch"):
        enc = tokenizer([texts[i] for i in batch], add_special_tokens=False, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        rngs = [random.Random(sample_seed(seed, step, prompts[i])) for i in batch]
        sampler = PerSampleSampler(rngs, float(params["temperature"]), float(params["top_p"]))
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gen_config, logits_processor=LogitsProcessorList([sampler]))
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        for i, toks in zip(batch, new):
            stop_at = next((j for j, t in enumerate(toks) if t in stops), None)
            kept = toks if stop_at is None else toks[:stop_at]
            p = prompts[i]
            rows[i] = {
                "question_id": p["question_id"],
                "paraphrase_index": p["paraphrase_index"],
                "sample_index": p["sample_index"],
                "system": p["system"],
                "question": p["question"],
                "prompt": texts[i],
                "answer": tokenizer.decode(kept, skip_special_tokens=True),
                # Like an API's completion_tokens: the stop token counts, padding after it does not.
                "n_tokens": len(kept) + (stop_at is not None),
                "finish_reason": "stop" if stop_at is not None else "length",
                "step": step,
            }
    return rows  # type: ignore[return-value]


def load_prompts(questions_path: str | Path, select: dict) -> list[dict]:
    from emflow.data import questions as q

    unknown = set(select) - SELECT_KEYS
    if unknown:
        raise user_error(
            "config", "questions", f"unknown keys {sorted(unknown)}", f"use only file, {', '.join(sorted(SELECT_KEYS))}"
        )
    qs = q.load_questions(
        questions_path, ids=select.get("ids"), samples_per_paraphrase=select.get("samples_per_paraphrase")
    )
    return q.iter_prompts(qs)


def generate_answers(
    *,
    base: str | Path,
    persona: str | Path | None,
    adapter: str | Path | None,
    questions_path: str | Path,
    select: dict,
    out_path: str | Path,
    params: dict,
    seed: int,
    step: int,
) -> int:
    """Write one JSONL row per question × paraphrase × sample; returns the row count."""
    params = check_params(params)
    prompts = load_prompts(questions_path, select)
    model, tokenizer = models.load_for_inference(base, persona, adapter, dtype=params["dtype"], device=params["device"])
    log.info("generating %d answers at step %d (adapters: %s)", len(prompts), step, models.active_adapters(model))
    rows = generate_rows(model, tokenizer, prompts, params=params, seed=seed, step=step)
    n = write_jsonl(out_path, rows)
    log.info("wrote %d rows to %s", n, out_path)
    return n


def generate_checkpoints(
    *,
    base: str | Path,
    persona: str | Path | None,
    checkpoints: dict[int, str | Path | None],
    questions_path: str | Path,
    select: dict,
    out_paths: dict[int, str | Path],
    params: dict,
    seed: int,
) -> dict[int, int]:
    """``generate_answers`` for several steps of one run, loading the base once and swapping the EM adapter.

    ``checkpoints`` maps step → EM adapter (None for step 0); each step's file equals what
    ``generate_answers`` would write for it.
    """
    params = check_params(params)
    if set(checkpoints) != set(out_paths):
        raise user_error("generate", "out_paths", "need exactly one output path per checkpoint step")
    prompts = load_prompts(questions_path, select)
    model, tokenizer = models.load_for_inference(base, persona, None, dtype=params["dtype"], device=params["device"])
    counts = {}
    for step in sorted(checkpoints):
        model = models.swap_em_adapter(model, checkpoints[step])
        rows = generate_rows(model, tokenizer, prompts, params=params, seed=seed, step=step)
        counts[step] = write_jsonl(out_paths[step], rows)
        log.info("step %d: wrote %d rows to %s", step, counts[step], out_paths[step])
    return counts


def _json_arg(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise user_error("command line", name, f"not valid JSON ({err})", "pass a JSON object in quotes") from None


def _path_or_none(text: str) -> str | None:
    return None if text.lower() in {"none", "null", ""} else text


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="emflow generate", description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="base model directory (local)")
    ap.add_argument("--persona", required=True, type=_path_or_none, help="persona adapter directory or 'none'")
    ap.add_argument("--adapter", required=True, type=_path_or_none, help="EM adapter checkpoint or 'none' (step 0)")
    ap.add_argument("--questions", required=True, help="question YAML")
    ap.add_argument("--select", required=True, help='JSON: {"ids": [...]|null, "samples_per_paraphrase": N|null}')
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--params", required=True, help="JSON: the config's generation section")
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--step", required=True, type=int)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    generate_answers(
        base=a.base,
        persona=a.persona,
        adapter=a.adapter,
        questions_path=a.questions,
        select=_json_arg("--select", a.select),
        out_path=a.out,
        params=_json_arg("--params", a.params),
        seed=a.seed,
        step=a.step,
    )


def cli_run(argv: list[str]) -> None:
    """``emflow generate-run``: every step of one run in one process (the grouped ``generate`` rule)."""
    ap = argparse.ArgumentParser(
        prog="emflow generate-run",
        description="Answer the probe questions at every step of one run, loading the base once.",
    )
    ap.add_argument("--base", required=True, help="base model directory (local)")
    ap.add_argument("--persona", required=True, type=_path_or_none, help="persona adapter directory or 'none'")
    ap.add_argument("--run-dir", required=True, help="the run folder holding checkpoint-<step>/ adapters")
    ap.add_argument("--steps", required=True, help="comma-separated steps; 0 = base + persona only")
    ap.add_argument("--questions", required=True, help="question YAML")
    ap.add_argument("--select", required=True, help='JSON: {"ids": [...]|null, "samples_per_paraphrase": N|null}')
    ap.add_argument("--out-dir", required=True, help="folder for step-<step>.jsonl files")
    ap.add_argument("--params", required=True, help="JSON: the config's generation section")
    ap.add_argument("--seed", required=True, type=int)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        steps = sorted({int(x) for x in a.steps.split(",") if x.strip()})
    except ValueError:
        raise user_error(
            "command line", "--steps", f"not comma-separated integers: {a.steps!r}", "e.g. 0,100,200"
        ) from None
    if not steps:
        raise user_error("command line", "--steps", "no steps given", "e.g. 0,100,200")
    checkpoints = {s: (Path(a.run_dir) / f"checkpoint-{s}" if s > 0 else None) for s in steps}
    out_paths = {s: Path(a.out_dir) / f"step-{s}.jsonl" for s in steps}
    generate_checkpoints(
        base=a.base,
        persona=a.persona,
        checkpoints=checkpoints,
        questions_path=a.questions,
        select=_json_arg("--select", a.select),
        out_paths=out_paths,
        params=_json_arg("--params", a.params),
        seed=a.seed,
    )
