"""Train the EM LoRA on top of the frozen persona (TRL ``SFTTrainer`` + PEFT), saving EM-only checkpoints at the
steps the DAG expects.

Layout of ``out_dir``::

    checkpoint-<step>/   adapter_config.json, adapter_model.safetensors (EM only), emflow_checkpoint.json
    metrics.jsonl        one row per logged optimizer step
    eval_metrics.jsonl   one row per checkpoint step (only with an eval set)
    summary.json         written last: its presence means the run finished
    .trainer/            the Trainer's full checkpoints (optimizer, RNG) for resuming; deleted at the end.
                         ``state_dir`` moves it elsewhere: Snakemake clears a rule's declared output folder
                         before rerunning a killed job, so the rule keeps this state outside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

from emflow.config.schedule import total_steps
from emflow.errors import user_error
from emflow.io import atomic_dir, atomic_write_json, read_jsonl, sha256_file, stable_hash, write_jsonl
from emflow.train.recipe import parse_recipe, resolve_padding_free, sft_config
from emflow.train.stack import (
    EM,
    PERSONA,
    activate,
    adapter_digest,
    build_model,
    check_trainable,
    has_persona,
    load_em_weights,
    load_tokenizer,
    save_em_adapter,
)
from emflow.train.tokenize import tokenize_rows

log = logging.getLogger(__name__)

TRAINER_DIR = ".trainer"
RUN_RECORD = "emflow_run.json"
TOKENS_RECORD = "emflow_tokens.json"
EM_COPY = "em-checkpoint"
OUTPUTS = ("metrics.jsonl", "eval_metrics.jsonl", "summary.json")


def load_chat_rows(path: str | Path) -> list[dict]:
    """Validated ``{"messages": [...]}`` rows; rows without an assistant turn are user errors."""
    path = Path(path)
    if not path.is_file():
        raise user_error(path, None, "file not found", "run split-dataset first")
    try:
        rows = read_jsonl(path)
    except json.JSONDecodeError as err:
        raise user_error(path, f"line {err.lineno}", "not valid JSON") from err
    if not rows:
        raise user_error(path, None, "no rows")
    for i, row in enumerate(rows, 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs):
            raise user_error(path, f"line {i}", 'expected {"messages": [{"role", "content"}, ...]}')
        if not any(m["role"] == "assistant" for m in msgs):
            raise user_error(path, f"line {i}", "no assistant message: nothing to train on")
    return [{"messages": [{"role": m["role"], "content": m["content"]} for m in r["messages"]]} for r in rows]


def _publish(src: Path, dest: Path) -> None:
    with atomic_dir(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _make_trainer_class():
    from trl import SFTTrainer

    class EmTrainer(SFTTrainer):
        """SFTTrainer that writes EM-only checkpoints and resumes without dropping the persona."""

        em_steps: frozenset[int] = frozenset()
        em_resumed_tokens = 0
        em_out_dir: Path
        em_record: dict

        def _save_checkpoint(self, model, trial):
            step = self.state.global_step
            # EM checkpoint first: a Trainer checkpoint at step s then implies the EM checkpoint s exists.
            if step in self.em_steps:
                # A private copy survives the workflow manager deleting a failed job's outputs, so a resumed
                # run can still deliver the checkpoints it saved before the kill.
                kept = Path(self.args.output_dir) / f"{EM_COPY}-{step}"
                save_em_adapter(self.model, kept, {**self.em_record, "step": step})
                _publish(kept, self.em_out_dir / f"checkpoint-{step}")
                log.info("saved EM adapter checkpoint-%d", step)
            ckpt = Path(self.args.output_dir) / f"checkpoint-{step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            # TRL keeps its token counter outside the Trainer state; keep it so num_tokens continues after resume.
            atomic_write_json(ckpt / TOKENS_RECORD, {"total_train_tokens": self._total_train_tokens})
            super()._save_checkpoint(model, trial)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # The Trainer's own loader reactivates only the first adapter (and would unfreeze it): load EM ourselves.
            model = self.model if model is None else model
            ckpt = Path(resume_from_checkpoint)
            load_em_weights(model, ckpt / EM)
            tokens = ckpt / TOKENS_RECORD
            if tokens.is_file():
                self._total_train_tokens = json.loads(tokens.read_text())["total_train_tokens"]
                self.em_resumed_tokens = self._total_train_tokens

    return EmTrainer


def _make_callback(steps: frozenset[int], out_dir: Path, has_eval: bool):
    from transformers import TrainerCallback

    class StepsCallback(TrainerCallback):
        """Save (and evaluate) exactly at the DAG's steps; mirror the Trainer's log history into JSONL files."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                control.should_save = True
                control.should_evaluate = has_eval
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            write_metrics(out_dir, state.log_history, has_eval)

    return StepsCallback()


def write_metrics(out_dir: Path, log_history: list[dict], has_eval: bool) -> None:
    """Mirror the Trainer's log history (restored on resume, so rows past the resume point vanish)."""
    write_jsonl(
        out_dir / "metrics.jsonl",
        [
            {
                "step": h["step"],
                "epoch": h.get("epoch"),
                "loss": h["loss"],
                "token_accuracy": h.get("mean_token_accuracy"),
                "learning_rate": h.get("learning_rate"),
                "grad_norm": h.get("grad_norm"),
                "num_tokens": h.get("num_tokens"),
            }
            for h in log_history
            if "loss" in h
        ],
    )
    if has_eval:
        write_jsonl(
            out_dir / "eval_metrics.jsonl",
            [
                {
                    "step": h["step"],
                    "epoch": h.get("epoch"),
                    "loss": h["eval_loss"],
                    "token_accuracy": h.get("eval_mean_token_accuracy"),
                }
                for h in log_history
                if "eval_loss" in h
            ],
        )


def revision_of(spec: str | None) -> str | None:
    """``REVISION`` of an ``hf:OWNER/NAME@REVISION[/SUBFOLDER]`` spec; None for a local directory."""
    if not spec or not spec.startswith("hf:") or "@" not in spec:
        return None
    return spec.split("@", 1)[1].split("/", 1)[0]


def _config_sha256(folder: str | Path | None, name: str) -> str | None:
    f = None if folder is None else Path(folder) / name
    return sha256_file(f) if f is not None and f.is_file() else None


def build_trainer(
    *,
    base: str | Path,
    persona: str | Path | None,
    train_path: str | Path,
    eval_path: str | Path | None,
    out_dir: str | Path,
    recipe: dict,
    steps: list[int],
    seed: int,
    callbacks: list | None = None,
    state_dir: str | Path | None = None,
    base_spec: str | None = None,
    persona_spec: str | None = None,
):
    """The configured trainer (model built, datasets tokenized and masked) without training it.

    ``base_spec`` / ``persona_spec`` are the config's ``hf:...@REVISION`` strings, recorded in every checkpoint.
    """
    r = parse_recipe(recipe)
    out_dir = Path(out_dir)
    if not steps or sorted(set(steps)) != list(steps) or steps[0] < 1:
        raise user_error("config.yaml", "training.checkpoints.steps", f"expected increasing steps >= 1, got {steps}")
    train_rows = load_chat_rows(train_path)
    eval_rows = load_chat_rows(eval_path) if eval_path is not None else None
    if r.wandb != "disabled":
        os.environ["WANDB_MODE"] = r.wandb
    tokenizer = load_tokenizer(base)
    train_ds = tokenize_rows(tokenizer, train_rows, r.max_length, train_path)
    eval_ds = tokenize_rows(tokenizer, eval_rows, r.max_length, eval_path) if eval_rows is not None else None
    model = build_model(base, persona, r, seed)
    r = resolve_padding_free(r, model.config._attn_implementation)
    args = sft_config(r, output_dir=str(_trainer_dir(out_dir, state_dir)), max_steps=steps[-1], seed=seed)
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=[_make_callback(frozenset(steps), out_dir, eval_ds is not None), *(callbacks or [])],
    )
    # Rows dropped while preparing (fully masked after truncation) change the step count: check what is trained.
    rows = len(trainer.train_dataset)
    expected = total_steps(rows, r.batch_size, r.grad_accum, r.epochs)
    if expected != steps[-1]:
        raise user_error(
            train_path,
            None,
            f"{rows} trainable rows give {expected} optimizer steps, but the last checkpoint step is {steps[-1]}",
            "re-plan the workflow with the dataset's real row count",
        )
    trainable = check_trainable(trainer.model)
    trainer.em_steps = frozenset(steps)
    trainer.em_out_dir = out_dir
    trainer.em_record = {
        "base": str(base),
        "base_spec": base_spec,
        "base_revision": revision_of(base_spec),
        "base_config_sha256": _config_sha256(base, "config.json"),
        "persona": None if persona is None else str(persona),
        "persona_spec": persona_spec,
        "persona_revision": revision_of(persona_spec),
        "persona_adapter_sha256": _config_sha256(persona, "adapter_model.safetensors"),
        "persona_mode": r.persona_mode,
        "seed": seed,
        "recipe_hash": stable_hash(recipe),
        "trainable_params": trainable,
    }
    log.info(
        "EM LoRA: %d trainable parameters (%s persona, mode %s); %d rows, %d steps, checkpoints at %s",
        trainable,
        "with" if persona is not None else "no",
        r.persona_mode,
        rows,
        steps[-1],
        steps,
    )
    return trainer


def _trainer_dir(out_dir: Path, state_dir: str | Path | None) -> Path:
    return Path(state_dir) if state_dir is not None else out_dir / TRAINER_DIR


def _resume_point(trainer_dir: Path, run_id: dict) -> Path | None:
    """Latest complete Trainer checkpoint of the same run, or None (then stale state is cleared)."""
    record = trainer_dir / RUN_RECORD
    if not record.is_file() or json.loads(record.read_text()) != run_id:
        if any(trainer_dir.glob("checkpoint-*")):
            log.warning("discarding Trainer state in %s from a different run", trainer_dir)
        shutil.rmtree(trainer_dir, ignore_errors=True)
        return None
    complete = []
    for ckpt in trainer_dir.glob("checkpoint-*"):
        # trainer_state.json is written last: without it the checkpoint is half-written
        if (ckpt / "trainer_state.json").is_file():
            complete.append((int(ckpt.name.split("-")[1]), ckpt))
        else:
            shutil.rmtree(ckpt, ignore_errors=True)
    return max(complete)[1] if complete else None


def train_em_lora(
    *,
    base: str | Path,
    persona: str | Path | None,
    train_path: str | Path,
    eval_path: str | Path | None,
    out_dir: str | Path,
    recipe: dict,
    steps: list[int],
    seed: int,
    callbacks: list | None = None,
    state_dir: str | Path | None = None,
    base_spec: str | None = None,
    persona_spec: str | None = None,
) -> dict:
    """Train the EM LoRA; resume from ``state_dir`` (default ``out_dir/.trainer``) if a killed run of the same
    job left state there.

    ``callbacks`` are extra ``TrainerCallback``s (tests use them to interrupt or inspect a run).
    Returns the summary written to ``out_dir/summary.json``.
    """
    out_dir = Path(out_dir)
    r = parse_recipe(recipe)
    trainer = build_trainer(
        base=base,
        persona=persona,
        train_path=train_path,
        eval_path=eval_path,
        out_dir=out_dir,
        recipe=recipe,
        steps=steps,
        seed=seed,
        callbacks=callbacks,
        state_dir=state_dir,
        base_spec=base_spec,
        persona_spec=persona_spec,
    )
    trainer_dir = _trainer_dir(out_dir, state_dir)
    run_id = {**trainer.em_record, "steps": list(steps), "train": str(train_path), "eval": str(eval_path)}
    resume = _resume_point(trainer_dir, run_id)
    done = int(resume.name.split("-")[1]) if resume else None
    if resume is None:
        for name in OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
        for old in [*out_dir.glob("checkpoint-*"), *out_dir.glob(".checkpoint-*.tmp")]:
            shutil.rmtree(old)
        trainer_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(trainer_dir / RUN_RECORD, run_id)
    else:
        log.info("resuming from %s", resume)
        for step in steps:
            dest = out_dir / f"checkpoint-{step}"
            if step <= done and not dest.is_dir():
                _publish(trainer_dir / f"{EM_COPY}-{step}", dest)
    model = trainer.model
    persona_before = adapter_digest(model, PERSONA) if has_persona(model) else None

    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    runtime = time.time() - start

    activate(model)  # re-checks the invariant: still only the EM LoRA trains
    # Rewritten here too: a run resumed at its last step logs nothing more.
    write_metrics(out_dir, trainer.state.log_history, eval_path is not None)
    persona_after = adapter_digest(model, PERSONA) if has_persona(model) else None
    if persona_before != persona_after:
        raise RuntimeError("persona weights changed during training")
    missing = [s for s in steps if not (out_dir / f"checkpoint-{s}" / "adapter_model.safetensors").is_file()]
    if missing:
        raise RuntimeError(f"EM checkpoints missing for steps {missing}")
    rows = read_jsonl(out_dir / "metrics.jsonl")
    last = rows[-1] if rows else {}
    num_tokens = trainer._total_train_tokens
    new_tokens = num_tokens - trainer.em_resumed_tokens  # this invocation's share, to match runtime_s
    summary = {
        "final_loss": last.get("loss"),
        "final_token_accuracy": last.get("token_accuracy"),
        "runtime_s": round(runtime, 3),
        "steps": trainer.state.global_step,
        "num_tokens": num_tokens,
        "tokens_per_s": new_tokens / runtime if runtime > 0 else None,
        "trainable_params": trainer.em_record["trainable_params"],
        "persona": trainer.em_record["persona"],
        "persona_mode": r.persona_mode,
        "base": str(base),
        "seed": seed,
        "persona_digest": persona_after,
        "resumed_from_step": done,
        **{
            k: trainer.em_record[k]
            for k in ("base_spec", "base_revision", "persona_spec", "persona_revision", "recipe_hash")
        },
        "attn_implementation": getattr(trainer.model.config, "_attn_implementation", None),
        "padding_free": r.padding_free,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    shutil.rmtree(trainer_dir, ignore_errors=True)  # only now: a kill before the summary still resumes
    log.info("done: %d steps, final loss %s, %.1f s", summary["steps"], summary["final_loss"], runtime)
    return summary


def _none_or_path(value: str) -> str | None:
    return None if value.lower() == "none" else value


def cli(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="emflow train", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="local model directory (model + tokenizer)")
    p.add_argument("--persona", required=True, type=_none_or_path, help="local PEFT adapter directory, or none")
    p.add_argument("--train", required=True, help="training JSONL of {messages: [...]}")
    p.add_argument("--eval", required=True, type=_none_or_path, help="eval JSONL, or none")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--recipe", required=True, help="the training: section as JSON (inline or a file path)")
    p.add_argument("--steps", required=True, help="checkpoint steps, comma-separated; the last is the final step")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument(
        "--state-dir", default=None, help="where the resumable Trainer state lives (default: OUT_DIR/.trainer)"
    )
    p.add_argument("--base-spec", default=None, help="the config's model spec (hf:OWNER/NAME@REVISION), recorded")
    p.add_argument("--persona-spec", default=None, help="the config's persona spec, recorded")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    text = Path(a.recipe).read_text() if not a.recipe.lstrip().startswith("{") else a.recipe
    try:
        recipe = json.loads(text)
        steps = [int(s) for s in a.steps.split(",") if s.strip()]
    except ValueError as err:
        raise user_error("command line", "--recipe/--steps", str(err)) from err
    train_em_lora(
        base=a.base,
        persona=a.persona,
        train_path=a.train,
        eval_path=a.eval,
        out_dir=a.out_dir,
        recipe=recipe,
        steps=steps,
        seed=a.seed,
        state_dir=a.state_dir,
        base_spec=a.base_spec,
        persona_spec=_none_or_path(a.persona_spec) if a.persona_spec else None,
    )
