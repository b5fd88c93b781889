"""``emflow`` commands of the demo stage: ``demo_assets`` and ``demo_judge`` (the rules of the same names) and
``demo_story`` (``make demo``'s last step). Each receives the already-validated ``demo:`` section (or the part
its outputs depend on) and never re-validates it."""

from __future__ import annotations

import argparse
import os


def demo_assets(argv: list[str]) -> None:
    """The world: tokenizer, base, personas, probe questions and the encrypted EM dataset under ``--out-dir``."""
    from emflow.cli import load_params, setup_logging
    from emflow.config.sections.demo import World
    from emflow.demo.assets import build_world

    ap = argparse.ArgumentParser(prog="emflow demo_assets", description=demo_assets.__doc__)
    ap.add_argument("--out-dir", required=True, help="demo.out_dir")
    ap.add_argument("--world", required=True, help="JSON of the demo section's world keys (Demo.world)")
    ap.add_argument("--password-env", required=True, help="the demo dataset's password_env")
    ap.add_argument("--password-default", default="", help="the demo dataset's password_default")
    args = ap.parse_args(argv)
    setup_logging()
    # The archive's password comes from the same variable the dataset config names (public default otherwise).
    password = os.environ.get(args.password_env) or args.password_default
    build_world(args.out_dir, load_params(World, args.world, "--world"), password)


def demo_judge(argv: list[str]) -> None:
    """The judge: a tiny LM trained on the world's labels, in ``--out-dir``/judge."""
    from emflow.cli import load_params, setup_logging
    from emflow.config.sections.demo import DemoJudge
    from emflow.demo.judge import build_judge

    ap = argparse.ArgumentParser(prog="emflow demo_judge", description=demo_judge.__doc__)
    ap.add_argument("--out-dir", required=True, help="demo.out_dir")
    ap.add_argument("--seed", type=int, required=True, help="demo.seed")
    ap.add_argument("--judge", required=True, help="JSON of demo.judge")
    args = ap.parse_args(argv)
    setup_logging()
    build_judge(args.out_dir, load_params(DemoJudge, args.judge, "--judge"), seed=args.seed)


def demo_story(argv: list[str]) -> None:
    """What the finished demo shows; exits 1 when its planted effect is absent."""
    from emflow.config.experiment import load_experiment
    from emflow.config.files import load_config_files
    from emflow.demo.story import check, tell
    from emflow.errors import user_error
    from emflow.layout import Layout

    ap = argparse.ArgumentParser(prog="emflow demo_story", description=demo_story.__doc__)
    ap.add_argument("configs", nargs="+", help="config.yaml and overlays (the demo: config.yaml config/demo.yaml)")
    args = ap.parse_args(argv)
    exp = load_experiment(load_config_files(args.configs), source=" + ".join(args.configs))
    demo = exp.section("demo")
    if demo is None:
        raise user_error(" + ".join(args.configs), "demo", "missing", "pass the demo overlay: config/demo.yaml")
    layout = Layout.of(exp.name)
    if not tell(*check(layout.root, demo.story), layout):
        raise SystemExit(1)
