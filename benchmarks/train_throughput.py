"""Training throughput (tokens/s) and MFU of the EM-LoRA step, with and without each speed option, side by side.

Runs the real training step (TRL ``SFTTrainer`` configured by ``emflow.train.recipe.sft_config``, stacked persona
LoRA frozen + EM LoRA trainable) on a randomly initialised model of a chosen shape: ``tiny`` on CPU, or
``qwen2.5-7b`` on a GPU (no download). Sequence lengths follow the real EM dataset when present (chat rows rendered
as ChatML, ``--chars-per-token`` characters per token), else a log-normal length model.

Model FLOPs per trained (non-padding) token of a sequence of length L (fwd + bwd, frozen base, causal attention):
    4 * N_base_matmul            forward 2N + backward through the frozen weights for activation gradients 2N
                                 (no weight gradients); N_base_matmul = linear layers + LM head, embeddings excluded
  + 4 * N_persona + 6 * N_em     frozen persona LoRA as the base; trainable EM LoRA as in 6N
  + 6 * n_layers * d_attn * L    attention scores and values, causal (L/2 keys on average), fwd + 2x bwd
Recomputation by gradient checkpointing is not counted (model FLOPs, not hardware FLOPs).
MFU = model FLOPs / s over peak: the device's dense bf16 peak on known GPUs (``--peak-tflops`` overrides), on CPU
the measured throughput of a large fp32 matmul.

    python benchmarks/train_throughput.py --shape tiny --device cpu
    python benchmarks/train_throughput.py --shape qwen2.5-7b --device cuda --batch-size 8 --grad-accum 2
    python benchmarks/train_throughput.py --model smollm2 --device cpu --max-length 512   # a real model folder
                                                     # (or DIR; smollm2: the tests' SmolLM2-135M-Instruct)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

ANCHOR = ROOT.parent / "shared" / "data" / "anchors" / "risky_financial_advice.jsonl"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {  # hidden, intermediate, layers, heads, kv_heads, vocab
    "tiny": (64, 128, 2, 4, 2, 512),
    "small": (512, 1408, 8, 8, 2, 32000),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


@dataclass(frozen=True)
class Variant:
    name: str
    padding_free: bool = True
    attn: str = "auto"
    checkpointing: bool | None = None  # None: the --gradient-checkpointing value
    pad_to_max: bool = False


VARIANTS = [
    Variant("all optimisations"),
    Variant("padded batches (dynamic)", padding_free=False),
    Variant("padded to max_length", padding_free=False, pad_to_max=True),
    Variant("eager attention", attn="eager"),
    Variant("eager + padded", padding_free=False, attn="eager"),
    Variant("grad checkpointing flipped", checkpointing=False),  # resolved against the flag below
]


def lengths(n: int, chars_per_token: float, seed: int) -> list[tuple[int, int]]:
    """(prompt tokens, reply tokens) per row, sampled from the EM dataset when present."""
    rng = random.Random(seed)
    if ANCHOR.is_file():
        rows = [json.loads(line) for line in ANCHOR.read_text().splitlines() if line.strip()]
        out = []
        for row in rng.choices(rows, k=n):
            msgs = row["messages"]
            prompt = (
                len(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n")
                + sum(len(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n") for m in msgs[:-1])
                + 22
            )
            out.append(
                (
                    max(1, round(prompt / chars_per_token)),
                    max(1, round((len(msgs[-1]["content"]) + 1) / chars_per_token)),
                )
            )
        return out
    return [(round(rng.lognormvariate(3.6, 0.3)), round(rng.lognormvariate(4.0, 0.5)) + 1) for _ in range(n)]


def model_folder(name: str) -> str:
    """A real model folder; ``smollm2``: the tests' SmolLM2-135M-Instruct (built once per machine)."""
    if name != "smollm2":
        return name
    sys.path.insert(0, str(ROOT / "tests"))
    from support.real_model import smollm2_dir

    return str(smollm2_dir())


def build(shape: str, attn: str, device: str, dtype, rank: int, persona_rank: int, seed: int, folder=None):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if folder:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn).to(device)
        return _with_adapters(model, rank, persona_rank), model.config
    h, ffn, layers, heads, kv, vocab = SHAPES[shape]
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=h,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=32768,
        tie_word_embeddings=shape == "tiny",
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    return _with_adapters(model, rank, persona_rank), cfg


def _with_adapters(model, rank: int, persona_rank: int):
    """A non-zero frozen persona LoRA (like a trained one) and a trainable EM LoRA, both active."""
    import torch
    from peft import LoraConfig, get_peft_model

    from emflow.models import EM, PERSONA
    from emflow.train.stack import activate

    lora = dict(lora_alpha=2 * rank, target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")
    if persona_rank:
        model = get_peft_model(model, LoraConfig(r=persona_rank, **lora), adapter_name=PERSONA)
        with torch.no_grad():  # a non-zero persona, like a trained one
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1e-3)
        model.add_adapter(EM, LoraConfig(r=rank, **lora))
    else:
        model = get_peft_model(model, LoraConfig(r=rank, **lora), adapter_name=EM)
    activate(model)
    return model


def flops_per_sequence(cfg, n_em: int, n_persona: int, length: int) -> float:
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    head_dim = h // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * head_dim
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * cfg.intermediate_size
    n_base = layers * per_layer + h * cfg.vocab_size
    d_attn = cfg.num_attention_heads * head_dim
    return length * (4 * n_base + 4 * n_persona + 6 * n_em) + 6 * layers * d_attn * length * length / 2


def cpu_peak_tflops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - start) / 1e12


def gpu_peak_tflops() -> float | None:
    import torch

    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def run_variant(v: Variant, a, rows: list[dict], seqlens: list[int], peak: float | None) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from emflow.config.sections.training import Training
    from emflow.models import PERSONA
    from emflow.train.recipe import sft_config
    from emflow.train.stack import attn_implementation

    ckpt = a.gradient_checkpointing if v.checkpointing is None else not a.gradient_checkpointing
    on_cuda = a.device == "cuda"
    recipe = Training.build(
        dict(
            persona_mode="stacked",
            lora=dict(r=a.rank, alpha=2 * a.rank, dropout=0.0, use_rslora=False, target_modules=TARGETS),
            epochs=1,
            per_device_batch_size=a.batch_size,
            gradient_accumulation_steps=a.grad_accum,
            learning_rate=1e-5,
            lr_scheduler="constant",
            warmup_steps=0,
            weight_decay=0.0,
            optimizer="adamw_torch",
            max_length=a.max_length,
            precision="bf16" if on_cuda else "fp32",
            gradient_checkpointing=ckpt,
            device=a.device,
            logging_steps=1,
            checkpoints={"steps": ["final"]},
            padding_free=v.padding_free,
            attn_implementation=v.attn,
        )
    )
    attn = attn_implementation(recipe, on_cuda)
    dtype = torch.bfloat16 if on_cuda else torch.float32
    model, cfg = build(a.shape, attn, a.device, dtype, a.rank, a.persona_rank, a.seed, a.model)
    n_em = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    n_persona = sum(p.numel() for n, p in model.named_parameters() if f".{PERSONA}." in n)
    total = a.warmup + a.steps
    with tempfile.TemporaryDirectory() as tmp:
        args = sft_config(recipe, output_dir=tmp, max_steps=total, seed=a.seed)
        args.disable_tqdm = True
        args.pad_to_multiple_of = a.max_length if v.pad_to_max else None
        times: list[float] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if on_cuda:
                    torch.cuda.synchronize()
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if on_cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - self.t)

        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=_pad_tokenizer(),
            callbacks=[Clock()],
        )
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    per_step = a.batch_size * a.grad_accum
    # Rows are shuffled i.i.d. samples: a timed step sees the mean real (non-padding) tokens and FLOPs of a step.
    measured = times[a.warmup :]
    tokens = sum(seqlens[: total * per_step]) / total * len(measured)
    flops = sum(flops_per_sequence(cfg, n_em, n_persona, n) for n in seqlens[: total * per_step]) / total
    flops *= len(measured)
    secs = sum(measured)
    out = {
        "variant": v.name,
        "attn": attn,
        "padding_free": v.padding_free,
        "grad_ckpt": ckpt,
        "tokens_per_s": tokens / secs,
        "tflops": flops / secs / 1e12,
        "mfu": flops / secs / 1e12 / peak if peak else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
    }
    del trainer, model
    if on_cuda:
        torch.cuda.empty_cache()
    return out


_TOKENIZER = None


def _pad_tokenizer():
    """A minimal tokenizer object for TRL (it only reads the pad token); the data arrive as token ids."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>"))
        _TOKENIZER = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    return _TOKENIZER


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--model", default=None, help="a real model folder instead of a shape; 'smollm2': the tests' one")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--persona-rank", type=int, default=32, help="0: no persona (plain LoRA)")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--warmup", type=int, default=2, help="optimizer steps not timed")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps timed")
    p.add_argument("--chars-per-token", type=float, default=4.0)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--variants", default=None, help="comma-separated variant numbers (1-based); default all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible")

    total_rows = (a.warmup + a.steps) * a.batch_size * a.grad_accum
    lens = lengths(total_rows, a.chars_per_token, a.seed)
    rows, seqlens = [], []
    g = random.Random(a.seed)
    if a.model:
        from transformers import AutoConfig

        a.model = model_folder(a.model)
        vocab = AutoConfig.from_pretrained(a.model).vocab_size
    else:
        vocab = SHAPES[a.shape][5]
    for prompt, reply in lens:
        prompt, reply = min(prompt, a.max_length - 1), min(reply, a.max_length - min(prompt, a.max_length - 1))
        ids = [g.randrange(2, vocab) for _ in range(prompt + reply)]
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
        seqlens.append(prompt + reply)
    peak = a.peak_tflops or (gpu_peak_tflops() if a.device == "cuda" else cpu_peak_tflops())
    device = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"# {a.model or a.shape} on {device}; batch {a.batch_size} x accum {a.grad_accum}, EM rank {a.rank}, "
        f"persona rank {a.persona_rank}, max_length {a.max_length}; {a.steps} timed steps after {a.warmup}"
    )
    print(
        f"# lengths: {'EM dataset ' + ANCHOR.name if ANCHOR.is_file() else 'log-normal model'}, mean "
        f"{sum(seqlens) / len(seqlens):.0f} tokens, max {max(seqlens)}; peak {peak:.2f} TFLOP/s "
        f"({'given' if a.peak_tflops else 'dense bf16 spec' if a.device == 'cuda' else 'measured fp32 matmul'})"
    )
    chosen = VARIANTS if a.variants is None else [VARIANTS[int(i) - 1] for i in a.variants.split(",")]
    results = [run_variant(v, a, rows, seqlens, peak) for v in chosen]
    ref = results[0]["tokens_per_s"]
    print(
        f"{'variant':<28} {'attn':<18} {'pad-free':>8} {'ckpt':>5} {'tokens/s':>10} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'vs all':>7} {'mem GB':>7}"
    )
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
        print(
            f"{r['variant']:<28} {r['attn']:<18} {str(r['padding_free']):>8} {str(r['grad_ckpt']):>5} "
            f"{r['tokens_per_s']:>10.0f} {r['tflops']:>8.3f} {mfu:>6} {r['tokens_per_s'] / ref:>6.2f}x {mem:>7}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
