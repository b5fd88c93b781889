"""Brief causal-LM training of the demo's tiny models on CPU: the base, the persona LoRAs and the judge.

These are demo *assets*, built once and cached by the demo rules; the EM stage itself is the real trainer
(``emflow.train.run``). Only the answer tokens (and the end-of-turn token) carry loss, and prompts are tokenised
exactly as generation and the ``hf`` judge tokenise them: the chat template with the generation prompt, then
the answer's own tokens.
"""

from __future__ import annotations

import logging
import random

from emflow.config.sections.demo import Schedule

log = logging.getLogger(__name__)

Example = tuple[list[int], list[int]]  # (input_ids, labels)


def encode_chat(tokenizer, messages: list[dict]) -> Example:
    """(input_ids, labels) with loss on the last (assistant) message and its end-of-turn token only."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer.encode(messages[-1]["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _optimizer(params: list, schedule: Schedule):
    """AdamW with a linear warm-up, then linear decay to a tenth: short runs still end on a settled model."""
    import torch

    opt = torch.optim.AdamW(params, lr=schedule.learning_rate, weight_decay=0.0)
    warm = max(1, schedule.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 1.0 - 0.9 * s / max(1, schedule.steps))
    )
    return opt, sched


def _padded(batch: list[Example], pad: int) -> dict:
    """The model's keyword arguments for one batch, right-padded (labels padded with -100, masked out)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    return {
        "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch]),
        "labels": torch.tensor([y + [-100] * (width - len(y)) for _, y in batch]),
    }


def train_on_chats(
    model, tokenizer, chats: list[list[dict]], schedule: Schedule, *, seed: int, desc: str, after_step=None
) -> float:
    """AdamW over the trainable parameters of ``model`` for ``schedule.steps`` batches; returns the last loss.

    Batches walk seeded shuffles of the examples (a new shuffle when fewer than a batch remain). ``after_step``:
    called with the number of steps done after each one (the demo judge saves its early snapshot there)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    examples = [encode_chat(tokenizer, c) for c in chats]
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = _optimizer(params, schedule)
    model.train()
    order: list[int] = []
    loss_value = float("nan")
    bar = tqdm(range(schedule.steps), desc=desc, unit="step")
    for step in bar:
        if len(order) < schedule.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = [examples[i] for i in order[: schedule.batch_size]], order[schedule.batch_size :]
        loss = model(**_padded(batch, tokenizer.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
        if step % 100 == 0:
            log.info("%s: step %d loss %.4f", desc, step, loss_value)
        if after_step is not None:
            after_step(step + 1)
    model.eval()
    log.info("%s: %d steps, final batch loss %.4f", desc, schedule.steps, loss_value)
    return loss_value


def train_lora(
    base_dir, chats: list[list[dict]], schedule: Schedule, *, rank: int, alpha: int, seed: int, out_dir, desc: str
) -> float:
    """A LoRA adapter (all seven projections) trained on ``chats`` over the frozen base, saved with PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from emflow.demo.tiny import LORA_TARGETS
    from emflow.models import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")
    )
    loss = train_on_chats(model, tokenizer, chats, schedule, seed=seed, desc=desc)
    model.save_pretrained(out_dir)
    return loss


def sample_answers(model, tokenizer, messages_list: list[list[dict]], *, max_new_tokens: int) -> list[str]:
    """Greedy answers, for the asset builder's own sanity log (the pipeline's generation is ``emflow.generate.run``)."""
    import torch

    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages_list]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
