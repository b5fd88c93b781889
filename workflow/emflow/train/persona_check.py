"""The proof, on every run, that the persona is active while the EM LoRA trains.

PEFT's ``set_adapter`` activates one adapter: a stacked model whose persona is silently off trains the EM LoRA on
the plain base, and its runs end with the same loss whatever the persona (two personas of the study this product
grew from did: 0.747 / 86.5 % both). So ``build_model`` measures each configuration as it builds it, on a fixed
sample (the first ``training.persona_check.rows`` rows of the eval split, else of the train split):

- ``base``: the base alone;
- ``persona``: base + persona (in merged mode folded in at fp32, compared with the fp32 base; ``persona_cast`` is
  the same after the cast to the training precision, which the stacked model is compared with);
- ``stacked``: base + persona + the fresh EM LoRA, as training starts (``lora_B`` = 0: equal to base + persona).

Per configuration only the label tokens' log-probabilities are kept (never the logits: the vocabulary can be 152k
wide). The run fails when the persona moves no label token's log-probability by more than
``persona_check.min_change`` against the base (a user error naming the persona: the adapter does nothing on this
base), when the stacked model gives the base's log-probabilities (the persona is off), or when it differs from base
+ persona at init. After a resume the Trainer's state is checked again (``ResumeCheck``): the live model against
the same model with only the EM LoRA active must differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from emflow.config.sections.training import PersonaCheck
from emflow.errors import user_error
from emflow.models import EM
from emflow.train.recipe import SOURCE
from emflow.train.stack import activate, has_persona
from emflow.train.tokenize import IGNORE

log = logging.getLogger(__name__)

BASE, PERSONA, PERSONA_CAST, STACKED = "base", "persona", "persona_cast", "stacked"
# What the after-resume check records when it does not compare anything.
NOT_APPLICABLE_MERGED = "not applicable: persona merged into the base weights"
NOT_APPLICABLE_NO_PERSONA = "not applicable: no persona"
PASSED = "passed"
NOT_RESUMED = "not resumed"


def label_logprobs(model, rows: list[dict]):
    """The log-probability the model gives each label token of ``rows`` (``input_ids`` / ``labels`` lists, labels
    ``-100`` where no loss is taken), concatenated in row order as a float32 CPU tensor.

    One row per forward pass in eval mode, logits only at the positions that predict a label token
    (``logits_to_keep``), so the full logits of a sample are never held.
    """
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for row in rows:
                ids = torch.tensor([row["input_ids"]], device=device)
                targets = torch.tensor(row["labels"][1:], device=device)  # position j predicts token j + 1
                keep = (targets != IGNORE).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    continue
                logits = model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
                out.append(lp.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def nll(logprobs) -> float:
    """Mean negative log-likelihood per label token (the Trainer's token-weighted eval loss)."""
    return float(-logprobs.mean())


def max_change(a, b) -> float:
    """Largest absolute difference of two configurations' token log-probabilities."""
    return float((a - b).abs().max())


@dataclass
class Probe:
    """The sample rows and the label log-probabilities of each configuration measured on them (``measure``)."""

    rows: list[dict]
    logprobs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, dataset, n: int) -> Probe:
        """The first ``n`` rows of a tokenized dataset (``emflow.train.tokenize.tokenize_rows``)."""
        take = min(n, len(dataset))
        return cls([{"input_ids": dataset[i]["input_ids"], "labels": dataset[i]["labels"]} for i in range(take)])

    def measure(self, name: str, model) -> None:
        self.logprobs[name] = label_logprobs(model, self.rows)
        log.info("persona check: %s loss %.6f on %d tokens", name, nll(self.logprobs[name]), self.tokens(name))

    def tokens(self, name: str = BASE) -> int:
        return int(self.logprobs[name].numel())


def persona_label(persona, persona_spec: str | None) -> str:
    """How errors name the persona: the config's spec and the folder it was loaded from."""
    if persona_spec and str(persona_spec) != str(persona):
        return f"{persona_spec} ({persona})"
    return str(persona)


def persona_effect(
    probe: Probe, check: PersonaCheck, *, persona: str | None, mode: str, field: str | None = None
) -> dict:
    """The record of the persona's effect at training start (``summary.json``'s ``persona_effect``); raises when the
    persona is inactive. ``persona``: the persona's label (``persona_label``), None for a run without one;
    ``field``: the config key that names its adapter (``personas.<name>[.<base>]``), for the error."""
    lp = probe.logprobs
    base, stacked = lp[BASE], lp[STACKED]
    tokens = probe.tokens(BASE)
    if tokens == 0:
        raise RuntimeError("persona check: the sample rows have no label token to score")
    where = f"over {tokens} label tokens of the first {len(probe.rows)} rows"
    record = {
        "rows": len(probe.rows),
        "tokens": tokens,
        "min_change": check.min_change,
        "persona": persona,
        "persona_mode": mode if persona is not None else None,
        "loss_base": nll(base),
        "loss_persona": None,
        "loss_stacked": nll(stacked),
        "max_change_persona": None,
        "max_change_stacked": max_change(stacked, base),
        "max_change_stacked_vs_persona": None,
        "persona_active": None,
    }
    if persona is None:
        if record["max_change_stacked"] > check.min_change:
            raise RuntimeError(
                f"the fresh EM LoRA changes the base's token log-probabilities at init (max |change| "
                f"{record['max_change_stacked']:.3g} {where}): it must start at zero (lora_B = 0)"
            )
        return record
    with_persona = lp[PERSONA]
    reference = lp.get(PERSONA_CAST, with_persona)  # merged below fp32: the stacked model's own precision
    record.update(
        loss_persona=nll(with_persona),
        max_change_persona=max_change(with_persona, base),
        max_change_stacked_vs_persona=max_change(stacked, reference),
    )
    if record["max_change_persona"] <= check.min_change:
        raise user_error(
            SOURCE,
            field or f"personas ({persona})",
            f"persona {persona}: base + persona moves no token log-probability by more than "
            f"training.persona_check.min_change = "
            f"{check.min_change:g} against the base alone (max |change| {record['max_change_persona']:.3g} {where}):"
            " the persona has no effect on this base",
            "check that the adapter's lora_B weights are not all zero and that it was trained for this base model",
        )
    if record["max_change_stacked"] <= check.min_change:
        raise RuntimeError(
            f"persona {persona} is not active in the stacked model: base + persona + EM LoRA gives the base's "
            f"token log-probabilities (max |change| {record['max_change_stacked']:.3g} {where}); check "
            "emflow.train.stack.activate (PEFT's PeftModel.set_adapter activates one adapter: both persona and em "
            "must be active on the tuner)"
        )
    if record["max_change_stacked_vs_persona"] > check.min_change:
        raise RuntimeError(
            f"persona {persona}: base + persona + fresh EM LoRA differs from base + persona at init (max |change| "
            f"{record['max_change_stacked_vs_persona']:.3g} {where}); the fresh EM LoRA must start at zero "
            "(lora_B = 0) with the persona active beside it"
        )
    record["persona_active"] = True
    log.info(
        "persona %s active: loss base %.4f, + persona %.4f, + persona + EM %.4f (max |change| %.3g)",
        persona,
        record["loss_base"],
        record["loss_persona"],
        record["loss_stacked"],
        record["max_change_persona"],
    )
    return record


def check_after_resume(model, probe: Probe, check: PersonaCheck, *, persona: str | None, mode: str, step) -> dict:
    """After a resume: the live model (persona and EM active) against only the EM LoRA active must differ by more
    than ``min_change``; both are active again afterwards. Merged: the persona is in the weights (not checked)."""
    if persona is None:
        return {"result": NOT_APPLICABLE_NO_PERSONA, "step": step}
    if mode != "stacked":
        return {"result": NOT_APPLICABLE_MERGED, "step": step}
    if not has_persona(model):
        raise RuntimeError(f"after resuming at step {step}, the model holds no persona adapter (persona {persona})")
    active = list(model.base_model.active_adapters)
    live = label_logprobs(model, probe.rows)
    try:
        model.base_model.set_adapter([EM])
        em_only = label_logprobs(model, probe.rows)
    finally:
        activate(model)  # both again, the persona frozen
    change = max_change(live, em_only)
    if change <= check.min_change:
        raise RuntimeError(
            f"after resuming at step {step}, persona {persona} is not active (active adapters {active}): the live "
            f"model gives the token log-probabilities of the EM LoRA alone (max |change| {change:.3g} over "
            f"{live.numel()} tokens); check the Trainer's resume (emflow.train.trainer "
            "EmTrainer._load_from_checkpoint must reactivate both adapters)"
        )
    log.info("after resume at step %s: persona %s active (max |change| %.3g vs EM alone)", step, persona, change)
    return {
        "result": PASSED,
        "step": step,
        "active_adapters": active,
        "loss_active": nll(live),
        "loss_em_only": nll(em_only),
        "max_change": change,
    }


def resume_callback(probe: Probe, check: PersonaCheck, *, persona: str | None, mode: str, step: int):
    """A callback that runs ``check_after_resume`` once the Trainer has loaded its checkpoint (``on_train_begin``
    comes after ``_load_from_checkpoint``); its ``result`` goes into ``summary.json``."""
    from transformers import TrainerCallback

    class ResumeCheck(TrainerCallback):
        result: dict | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.result = check_after_resume(model, probe, check, persona=persona, mode=mode, step=step)

    return ResumeCheck()
