"""``emflow generate``: answer the probe questions at one step or at several steps of one run.

The same command serves both ways the workflow cuts generation jobs (``generation.group_checkpoints``): one job
per step (``--steps 5``) or one job per run (``--steps 0,5,10``), with one ``--out`` file per step, in the same
order; step N > 0 is answered with ``--run-dir``'s checkpoint-N. Each step's file is the same either way.
"""

from __future__ import annotations

import argparse

from emflow.cli import json_arg, load_params, path_or_none, setup_logging
from emflow.errors import user_error


def parse_steps(text: str) -> list[int]:
    """``0,100,200`` → [0, 100, 200] (in the given order, each once); anything else is one line naming ``--steps``."""
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise user_error(
            "command line", "--steps", f"not comma-separated integers: {text!r}", "e.g. 0,100,200"
        ) from None
    if not steps:
        raise user_error("command line", "--steps", "no steps given", "e.g. 0,100,200")
    if min(steps) < 0:
        raise user_error("command line", "--steps", f"negative step {min(steps)}", "steps count from 0")
    if len(set(steps)) != len(steps):
        raise user_error("command line", "--steps", f"a step given twice: {text!r}", "name each step once")
    return steps


def generate(argv: list[str]) -> None:
    """Answer the probe questions at one step or at several steps of one run."""
    from emflow.config.sections.generation import Generation
    from emflow.generate.run import generate_steps

    ap = argparse.ArgumentParser(
        prog="emflow generate",
        description="Answer the probe questions at one or several steps of one run, loading the base once.",
    )
    ap.add_argument("--base", required=True, help="base model directory (local)")
    ap.add_argument("--persona", required=True, type=path_or_none, help="persona adapter directory or 'none'")
    ap.add_argument("--run-dir", type=path_or_none, default=None, help="the run's folder (checkpoint-<N>) or 'none'")
    ap.add_argument("--steps", required=True, help="comma-separated steps; 0 = base + persona only")
    ap.add_argument("--out", nargs="+", required=True, help="one answers file per step, in --steps order")
    ap.add_argument("--questions", required=True, help="question YAML")
    ap.add_argument("--select", required=True, help='JSON: {"ids": [...]|null}')
    ap.add_argument("--params", required=True, help="JSON: the config's generation section")
    ap.add_argument("--seed", required=True, type=int)
    ap.add_argument("--base-spec", default=None, help="the config's model spec (hf:OWNER/NAME@REVISION)")
    ap.add_argument(
        "--persona-field", default="personas", help="the config key of the persona's adapter, for its errors"
    )
    ap.add_argument("--base-mismatch", choices=["refused", "intended"], default="refused")
    a = ap.parse_args(argv)
    setup_logging()
    if a.persona is not None:  # step 0 may run before training: the same fit check, before anything loads
        from emflow.train.persona_fit import check_persona_fit

        check_persona_fit(
            a.base,
            a.persona,
            base_spec=a.base_spec,
            field=a.persona_field,
            mismatch_intended=a.base_mismatch == "intended",
        )
    steps = parse_steps(a.steps)
    if len(steps) != len(a.out):
        raise user_error("command line", "--out", f"{len(a.out)} files for {len(steps)} steps", "one file per step")
    generate_steps(
        base=a.base,
        persona=a.persona,
        run_dir=a.run_dir,
        outputs=dict(zip(steps, a.out, strict=True)),
        questions_path=a.questions,
        select=json_arg(a.select, "--select"),
        params=load_params(Generation, a.params, "--params"),
        seed=a.seed,
    )
