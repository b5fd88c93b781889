"""`emflow` commands of the train stage (rule ``train`` -> ``emflow train`` -> ``train`` here)."""

from __future__ import annotations

import argparse

from emflow.cli import load_params, path_or_none, setup_logging
from emflow.errors import user_error


def _steps(text: str, flag: str = "--steps") -> list[int]:
    if flag != "--steps" and text.strip() == "none":
        return []
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise user_error("command line", flag, str(err), "pass checkpoint steps as 10,20,36") from None


def train(argv: list[str]) -> None:
    """Train the EM LoRA on top of the frozen persona, saving EM-only checkpoints at the given steps."""
    from emflow.config.sections.training import Training
    from emflow.train.persona_fit import check_persona_fit
    from emflow.train.recipe import check_layers
    from emflow.train.run import train_em_lora

    p = argparse.ArgumentParser(prog="emflow train", description=train.__doc__)
    p.add_argument("--base", required=True, help="local model directory (model + tokenizer)")
    p.add_argument("--persona", required=True, type=path_or_none, help="local PEFT adapter directory, or none")
    p.add_argument("--train", required=True, help="training JSONL of {messages: [...]}")
    p.add_argument("--eval", required=True, type=path_or_none, help="eval JSONL, or none")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--training", required=True, help="the training: section as JSON (inline or a file path)")
    p.add_argument("--steps", required=True, help="checkpoint steps, comma-separated; the last is the final step")
    p.add_argument(
        "--analysis-steps",
        default="none",
        help="steps that save the EM adapter for the geometry only (comma-separated, or none)",
    )
    p.add_argument("--seed", required=True, type=int)
    p.add_argument(
        "--state-dir", default=None, help="where the resumable Trainer state lives (default: OUT_DIR/.trainer)"
    )
    p.add_argument("--base-spec", default=None, help="the config's model spec (hf:OWNER/NAME@REVISION), recorded")
    p.add_argument("--persona-spec", default=None, type=path_or_none, help="the config's persona spec, recorded")
    p.add_argument(
        "--persona-field",
        default="personas",
        help="the config key naming the persona's adapter (personas.<p> or personas.<p>.<base>), for its errors",
    )
    p.add_argument(
        "--base-mismatch",
        choices=["refused", "intended"],
        default="refused",
        help="intended: the adapter records another base model on purpose (a warning, not an error)",
    )
    p.add_argument(
        "--recipe-field",
        default="training",
        help="the config key of the run's recipe (training, or variants.<name>), for its errors",
    )
    a = p.parse_args(argv)
    setup_logging()
    if a.persona is not None:  # before loading anything: a persona for another base fails in seconds
        check_persona_fit(
            a.base,
            a.persona,
            base_spec=a.base_spec,
            field=a.persona_field,
            mismatch_intended=a.base_mismatch == "intended",
        )
    training = load_params(Training, a.training, "--training")
    check_layers(training, a.base, a.recipe_field)  # before loading anything
    train_em_lora(
        base=a.base,
        persona=a.persona,
        train_path=a.train,
        eval_path=a.eval,
        out_dir=a.out_dir,
        training=training,
        steps=_steps(a.steps),
        analysis_steps=_steps(a.analysis_steps, "--analysis-steps"),
        seed=a.seed,
        state_dir=a.state_dir,
        base_spec=a.base_spec,
        persona_spec=a.persona_spec,
        persona_field=a.persona_field if a.persona is not None else None,
    )
