"""Where a report's results come from (config hash, code version, package versions, judge, EM definition), and
the scrubbing of secret values from anything the report shows."""

from __future__ import annotations

import html
import importlib.metadata
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pandas as pd

from emflow.io import stable_hash

log = logging.getLogger(__name__)

PACKAGES = ["torch", "transformers", "peft", "trl", "snakemake", "plotnine", "pandas"]
# Environment variables whose values must never appear in the report, whatever path they took to get there.
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8


def git_commit(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of the workflow's source tree, or "unknown"."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    out = res.stdout.strip()
    return out if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", out) else "unknown"


def package_versions(packages: list[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def redact_secrets(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace the value of every secret-looking environment variable with ``[redacted]``."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if SECRET_NAME_RE.search(name) and len(value) >= MIN_SECRET_LEN:
            for form in {value, html.escape(value)}:
                if form in text:
                    log.warning("redacted the value of $%s from the report", name)
                    text = text.replace(form, "[redacted]")
    return text


def provenance_rows(provenance: dict, em: pd.DataFrame, definitions: pd.DataFrame) -> list[tuple[str, str]]:
    """(field, value) pairs: config hash, git commit, package versions, judge model, EM definition, extras."""
    prov = dict(provenance)
    config = prov.pop("config", None)
    config_hash = prov.pop("config_hash", None) or (stable_hash(config) if config is not None else "unknown")
    definition = str(prov.pop("definition", "unknown"))
    judge = prov.pop("judge_model", None)
    if not judge and "judge_model" in em.columns:
        judge = "; ".join(sorted({m for v in em["judge_model"].dropna() for m in str(v).split(";") if m}))
    rows = [
        ("experiment", str(prov.pop("experiment", "unknown"))),
        ("config hash (sha256)", config_hash),
        ("git commit", git_commit()),
        ("judge model", judge or "unknown"),
        ("EM definition", definition),
    ]
    if not definitions.empty and definition in set(definitions["definition"]):
        rule = definitions.set_index("definition").loc[definition]
        rows.append(("EM rule", f"{rule['em_rule']} (population: {rule['population']})"))
    rows += [(f"version: {k}", v) for k, v in package_versions().items()]
    for k, v in sorted(prov.items()):
        rows.append((str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)))
    return rows
