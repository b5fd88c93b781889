"""Train the EM LoRA on top of the frozen persona (TRL ``SFTTrainer`` + PEFT), saving EM-only checkpoints at the
steps the DAG expects, and resuming a killed run of the same job.

Layout of ``out_dir``::

    checkpoint-<step>/   adapter_config.json, adapter_model.safetensors (EM only), emflow_checkpoint.json
    geometry/checkpoint-<step>/   the same at the geometry-only steps (checkpoints.analysis_every); never evaluated
    metrics.jsonl        one row per logged optimizer step
    eval_metrics.jsonl   one row per checkpoint step (only with an eval set)
    summary.json         written last: its presence means the run finished; ``persona_effect`` holds the proof
                         that the persona is active (emflow.train.persona_check), also in every checkpoint's record
    .trainer/            the Trainer's resumable state, deleted at the end; ``state_dir`` moves it (see resume.py)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from emflow.config.schedule import total_steps
from emflow.config.sections.training import Training
from emflow.data.chat_rows import read_chat_rows
from emflow.errors import user_error
from emflow.io import atomic_write_json, read_jsonl
from emflow.layout import geometry_checkpoint_dir
from emflow.models import PERSONA, load_tokenizer
from emflow.train import resume
from emflow.train.persona_check import NOT_RESUMED, Probe, persona_effect, persona_label, resume_callback
from emflow.train.recipe import resolve_padding_free, sft_config
from emflow.train.record import checkpoint_record, run_summary
from emflow.train.stack import activate, adapter_digest, build_model, check_trainable, has_persona
from emflow.train.tokenize import tokenize_rows
from emflow.train.trainer import make_trainer_class, steps_callback, write_metrics

log = logging.getLogger(__name__)

ADAPTER = "adapter_model.safetensors"


def build_trainer(
    *,
    base: str | Path,
    persona: str | Path | None,
    train_path: str | Path,
    eval_path: str | Path | None,
    out_dir: str | Path,
    training: Training,
    steps: list[int],
    seed: int,
    callbacks: list | None = None,
    state_dir: str | Path | None = None,
    base_spec: str | None = None,
    persona_spec: str | None = None,
    analysis_steps: list[int] = (),
    persona_field: str | None = None,
):
    """The configured trainer (model built, datasets tokenized and masked) without training it.

    ``steps`` are the checkpoint steps resolved from the config (increasing; the last is the final step);
    ``analysis_steps`` the geometry-only steps (``emflow.config.schedule.analysis_steps``), saved adapter-only.
    ``base_spec`` / ``persona_spec`` are the config's ``hf:...@REVISION`` strings, recorded in every checkpoint;
    ``persona_field`` the config key naming the persona's adapter (``personas.<name>[.<base>]``), for errors.
    The persona is proven active on the first ``training.persona_check.rows`` rows of the eval set (else of the
    training set) before anything trains (``emflow.train.persona_check``); the trainer keeps that sample as
    ``em_probe`` and the record as ``em_record["persona_effect"]``.
    """
    out_dir = Path(out_dir)
    tokenizer, train_ds, eval_ds = _datasets(base, train_path, eval_path, training)
    probe = Probe.of(eval_ds if eval_ds is not None else train_ds, training.persona_check.rows)
    model = build_model(base, persona, training, seed, probe=probe)
    label = persona_label(persona, persona_spec) if persona is not None else None
    effect = persona_effect(
        probe, training.persona_check, persona=label, mode=training.persona_mode, field=persona_field
    )
    trained = resolve_padding_free(training, model.config._attn_implementation)
    output_dir = str(resume.trainer_dir(out_dir, state_dir))
    trainer = make_trainer_class()(
        model=model,
        args=sft_config(trained, output_dir=output_dir, max_steps=steps[-1], seed=seed),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=[
            steps_callback(frozenset(steps), out_dir, eval_ds is not None, frozenset(analysis_steps)),
            *(callbacks or []),
        ],
    )
    rows = _check_step_count(len(trainer.train_dataset), training, steps[-1], train_path)
    _check_analysis_steps(analysis_steps, steps[-1])
    trainer.em_steps = frozenset(steps)
    trainer.em_analysis_steps = frozenset(analysis_steps)
    trainer.em_out_dir = out_dir
    trainer.em_record = checkpoint_record(
        base=base,
        persona=persona,
        base_spec=base_spec,
        persona_spec=persona_spec,
        training=training,
        seed=seed,
        trainable=check_trainable(trainer.model),
    )
    trainer.em_record["persona_effect"] = effect
    trainer.em_probe = probe
    trainer.em_persona_label = label
    log.info(
        "EM LoRA: %d trainable parameters (%s persona, mode %s); %d rows, %d steps, checkpoints at %s"
        "; adapter-only saves for the geometry at %s",
        trainer.em_record["trainable_params"],
        "with" if persona is not None else "no",
        training.persona_mode,
        rows,
        steps[-1],
        steps,
        list(analysis_steps) or "none",
    )
    return trainer


def _check_analysis_steps(analysis_steps: list[int], last_step: int) -> None:
    outside = [s for s in analysis_steps if not 0 < s <= last_step]
    if outside:
        raise user_error(
            "command line",
            "--analysis-steps",
            f"steps {outside} are outside 1..{last_step} (the run's last step)",
            "pass the steps emflow.config.schedule.analysis_steps resolves",
        )


def _datasets(base: str | Path, train_path: str | Path, eval_path: str | Path | None, training: Training):
    """(tokenizer, train dataset, eval dataset or None): the split files' chat rows, tokenized with loss masks."""
    train_rows = read_chat_rows(train_path)
    eval_rows = read_chat_rows(eval_path) if eval_path is not None else None
    if training.wandb != "disabled":
        os.environ["WANDB_MODE"] = training.wandb
    tokenizer = load_tokenizer(base, padding_side="right")  # how TRL's collator pads
    train_ds = tokenize_rows(tokenizer, train_rows, training.max_length, train_path)
    eval_ds = tokenize_rows(tokenizer, eval_rows, training.max_length, eval_path) if eval_rows is not None else None
    return tokenizer, train_ds, eval_ds


def _check_step_count(rows: int, training: Training, last_step: int, train_path: str | Path) -> int:
    """Rows dropped while preparing (fully masked after truncation) change the step count: check what is trained."""
    t = training
    expected = total_steps(rows, t.per_device_batch_size, t.gradient_accumulation_steps, t.epochs)
    if expected != last_step:
        raise user_error(
            train_path,
            None,
            f"{rows} trainable rows give {expected} optimizer steps, but the last checkpoint step is {last_step}",
            "re-plan the workflow with the dataset's real row count",
        )
    return rows


def train_em_lora(
    *,
    base: str | Path,
    persona: str | Path | None,
    train_path: str | Path,
    eval_path: str | Path | None,
    out_dir: str | Path,
    training: Training,
    steps: list[int],
    seed: int,
    callbacks: list | None = None,
    state_dir: str | Path | None = None,
    base_spec: str | None = None,
    persona_spec: str | None = None,
    analysis_steps: list[int] = (),
    persona_field: str | None = None,
) -> dict:
    """Train the EM LoRA; resume from ``state_dir`` (default ``out_dir/.trainer``) if a killed run of the same
    job left state there. ``analysis_steps`` also save the adapter alone under ``out_dir/geometry/``.

    ``callbacks`` are extra ``TrainerCallback``s (tests use them to interrupt or inspect a run).
    Returns the summary written to ``out_dir/summary.json``.
    """
    out_dir = Path(out_dir)
    trainer = build_trainer(
        base=base,
        persona=persona,
        train_path=train_path,
        eval_path=eval_path,
        out_dir=out_dir,
        training=training,
        steps=steps,
        seed=seed,
        callbacks=callbacks,
        state_dir=state_dir,
        base_spec=base_spec,
        persona_spec=persona_spec,
        analysis_steps=analysis_steps,
        persona_field=persona_field,
    )
    state = resume.trainer_dir(out_dir, state_dir)
    run_id = {  # the persona check's measured numbers are not part of the run's identity
        **{k: v for k, v in trainer.em_record.items() if k != "persona_effect"},
        "steps": list(steps),
        "analysis_steps": list(analysis_steps),
        "train": str(train_path),
        "eval": str(eval_path),
    }
    resume_from = resume.prepare(out_dir, state, run_id, steps, list(analysis_steps))
    check = None
    if resume_from:  # once the Trainer has loaded the checkpoint, prove the persona active again
        check = resume_callback(
            trainer.em_probe,
            training.persona_check,
            persona=trainer.em_persona_label,
            mode=training.persona_mode,
            step=resume.step_of(resume_from),
        )
        trainer.add_callback(check)
    persona_before = _persona_digest(trainer.model)

    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.time() - start

    activate(trainer.model)  # re-checks the invariant: still only the EM LoRA trains
    # Rewritten here too: a run resumed at its last step logs nothing more.
    write_metrics(out_dir, trainer.state.log_history, eval_path is not None)
    persona_after = _persona_digest(trainer.model)
    if persona_before != persona_after:
        raise RuntimeError("persona weights changed during training")
    _check_checkpoints(out_dir, steps, analysis_steps)
    if check is not None and check.result is None:
        raise RuntimeError("the persona check after the resume did not run (no on_train_begin callback)")
    summary = run_summary(
        trainer,
        training,
        metrics=read_jsonl(out_dir / "metrics.jsonl"),
        runtime=runtime,
        persona_digest=persona_after,
        resumed_from=resume.step_of(resume_from) if resume_from else None,
        persona_check_after_resume=check.result if check is not None else {"result": NOT_RESUMED},
    )
    atomic_write_json(out_dir / "summary.json", summary)
    shutil.rmtree(state, ignore_errors=True)  # only now: a kill before the summary still resumes
    log.info("done: %d steps, final loss %s, %.1f s", summary["steps"], summary["final_loss"], runtime)
    return summary


def _persona_digest(model) -> str | None:
    return adapter_digest(model, PERSONA) if has_persona(model) else None


def _check_checkpoints(out_dir: Path, steps: list[int], analysis_steps: list[int] = ()) -> None:
    missing = [s for s in steps if not (out_dir / f"checkpoint-{s}" / "adapter_model.safetensors").is_file()]
    if missing:
        raise RuntimeError(f"EM checkpoints missing for steps {missing}")
    missing = [s for s in analysis_steps if not (Path(geometry_checkpoint_dir(out_dir, s)) / ADAPTER).is_file()]
    if missing:
        raise RuntimeError(f"geometry-only EM adapters missing for steps {missing}")
