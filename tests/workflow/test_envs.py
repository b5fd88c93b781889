"""The rules' conda environment and the Makefile's requirements pin the same versions."""

from __future__ import annotations

import re

import yaml

from support.paths import ROOT


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if m := re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_conda_env_pins_equal_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "envs" / "emflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == req
    assert {
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "openai",
        "pandas",
        "plotnine",
        "snakemake",
        "easy-dataset-share",
    } <= set(req)


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    for name, pinned in req.items():
        assert version(name).split("+")[0] == pinned, name


def test_every_rule_declares_the_pinned_env_and_a_log():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^\s*rule (\w+):", text, flags=re.M)
        for rule in rules:
            body = text.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0].split("\n    rule ", 1)[0]
            if rule == "fetch" or "shell:" not in body:
                continue  # target-only rules run nothing
            assert "log:" in body and "conda:" in body, f"{smk.name}: rule {rule}"
