"""Models, adapters and question files: where they come from and where they live on disk.

Hub assets are fetched once, where the internet is (a local rule on a cluster's login node), into
``<resources_dir>/hf/OWNER/NAME/REVISION``; training and generation only ever read that folder, offline.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from emflow.errors import EmflowError, user_error
from emflow.files import atomic_dir

log = logging.getLogger(__name__)

FETCH_HINT = "run the fetch target on a machine with internet: snakemake fetch (see README)"


@dataclass(frozen=True)
class Asset:
    """``hf:OWNER/NAME@REVISION[/SUBFOLDER]`` or a local directory."""

    spec: str
    resources_dir: str = "resources"

    @property
    def is_hub(self) -> bool:
        return self.spec.startswith("hf:")

    def _parts(self) -> tuple[str, str, str | None]:
        repo, _, rest = self.spec[3:].partition("@")
        revision, _, subfolder = rest.partition("/")
        return repo, revision, subfolder or None

    @property
    def repo(self) -> str:
        return self._parts()[0]

    @property
    def revision(self) -> str:
        return self._parts()[1]

    @property
    def snapshot_dir(self) -> str:
        """The directory the DAG tracks: the fetched snapshot (hub) or the local path."""
        if not self.is_hub:
            return self.spec
        repo, revision, _ = self._parts()
        return f"{self.resources_dir}/hf/{repo}/{revision}"

    @property
    def path(self) -> str:
        """The directory a stage loads (the snapshot's subfolder for a persona inside a multi-persona repo)."""
        sub = self._parts()[2] if self.is_hub else None
        return f"{self.snapshot_dir}/{sub}" if sub else self.snapshot_dir


def require_local(path: str | Path, what: str) -> Path:
    """Fail with the fetch hint when an asset a job needs is not on disk (compute nodes are offline)."""
    p = Path(path)
    if not p.exists():
        raise user_error(p, what, "not found on disk", FETCH_HINT)
    return p


def fetch_hf(repo: str, revision: str, out_dir: str | Path) -> Path:
    """Download a hub snapshot at a pinned revision and check it holds a model or adapters."""
    from huggingface_hub import snapshot_download

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise user_error(repo, "fetch", "HF_HUB_OFFLINE=1 is set here", FETCH_HINT)
    with atomic_dir(out_dir) as tmp:
        snapshot_download(repo_id=repo, revision=revision, local_dir=tmp)
        found = [p.name for p in Path(tmp).rglob("*") if p.name in {"config.json", "adapter_config.json"}]
        if not found:
            raise EmflowError(f"{repo}@{revision}: no config.json or adapter_config.json in the snapshot")
    log.info("fetched %s@%s into %s", repo, revision, out_dir)
    return Path(out_dir)


def cli_fetch_hf(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="emflow fetch-hf", description=fetch_hf.__doc__)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    fetch_hf(args.repo, args.revision, args.out)


def cli_fetch_url(argv: list[str] | None = None) -> None:
    from emflow.datasets import fetch_url

    ap = argparse.ArgumentParser(prog="emflow fetch-url", description="Download a file and verify its sha256.")
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    fetch_url(args.url, args.out, args.sha256 or None)
