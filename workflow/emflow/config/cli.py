"""`emflow plan`: the resolved experiment grid and checkpoint steps, before anything runs."""

from __future__ import annotations

import argparse
import json


def plan(argv: list[str]) -> None:
    from emflow.config.experiment import load_experiment
    from emflow.config.files import load_config_files

    ap = argparse.ArgumentParser(prog="emflow plan", description="Print the run grid and checkpoint steps.")
    ap.add_argument("configfiles", nargs="+", help="config.yaml, then overlays (merged like --configfile)")
    args = ap.parse_args(argv)
    exp = load_experiment(load_config_files(args.configfiles), source=" + ".join(args.configfiles))
    print(json.dumps({"experiment": exp.name, "config_hash": exp.hash, "runs": exp.plan()}, indent=2))
