"""The TRL trainer specialised for the stacked EM LoRA: EM-only checkpoints at the DAG's steps (and adapter-only
saves at the geometry's steps), a resume that keeps the persona active, and the metrics files mirrored from the
Trainer's log history."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from emflow.io import atomic_write_json, write_jsonl
from emflow.layout import geometry_checkpoint_dir
from emflow.models import EM
from emflow.train.em_adapter import load_em_weights, publish, save_em_adapter

log = logging.getLogger(__name__)

TOKENS_RECORD = "emflow_tokens.json"
EM_COPY = "em-checkpoint"  # the Trainer folder's private copy of EM checkpoint <step>: "em-checkpoint-<step>"
GEOMETRY_COPY = "em-geometry"  # its private copy of a geometry-only save: "em-geometry-<step>"


def make_trainer_class():
    """``EmTrainer`` (built on first use: importing TRL is slow)."""
    from trl import SFTTrainer

    class EmTrainer(SFTTrainer):
        """SFTTrainer that writes EM-only checkpoints and resumes without dropping the persona."""

        em_steps: frozenset[int] = frozenset()
        em_analysis_steps: frozenset[int] = frozenset()  # adapter only, for the geometry (checkpoints.analysis_every)
        em_resumed_tokens = 0
        em_out_dir: Path
        em_record: dict

        def _save_checkpoint(self, model, trial):
            step = self.state.global_step
            if step in self.em_analysis_steps and step not in self.em_steps:
                # Geometry only: the EM adapter alone (small), no Trainer state (optimizer, RNG) to resume from.
                kept = Path(self.args.output_dir) / f"{GEOMETRY_COPY}-{step}"
                save_em_adapter(self.model, kept, {**self.em_record, "step": step, "geometry_only": True})
                publish(kept, Path(geometry_checkpoint_dir(self.em_out_dir, step)))
                log.info("saved EM adapter for the geometry at step %d", step)
                return
            # EM checkpoint first: a Trainer checkpoint at step s then implies the EM checkpoint s exists.
            if step in self.em_steps:
                # A private copy survives the workflow manager deleting a failed job's outputs, so a resumed
                # run can still deliver the checkpoints it saved before the kill.
                kept = Path(self.args.output_dir) / f"{EM_COPY}-{step}"
                save_em_adapter(self.model, kept, {**self.em_record, "step": step})
                publish(kept, self.em_out_dir / f"checkpoint-{step}")
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


def steps_callback(steps: frozenset[int], out_dir: Path, has_eval: bool, analysis_steps: frozenset[int] = frozenset()):
    """A callback that saves (and evaluates) exactly at the DAG's steps, saves the adapter alone at the geometry's
    ``analysis_steps`` (no evaluation), and mirrors the log into JSONL files."""
    from transformers import TrainerCallback

    class StepsCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in steps:
                control.should_save = True
                control.should_evaluate = has_eval
            elif state.global_step in analysis_steps:
                control.should_save = True
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
