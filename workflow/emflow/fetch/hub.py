"""Hub downloads: fetch a repository at a pinned revision, verify the snapshot, record its manifest.

Hub assets are fetched once, where the internet is (a local rule on a cluster's login node), into
``<resources_dir>/hf/OWNER/NAME/REVISION`` (fetch/asset.py) beside a manifest (``emflow_asset.json``) recording
the repository, the requested revision, the commit it resolved to and every file's size; training and
generation only ever read that folder, with the hub switched off.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from emflow.errors import user_error
from emflow.io import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

FETCH_HINT = "run the fetch target on a machine with internet: snakemake fetch (see README)"
MANIFEST = "emflow_asset.json"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Llama repos also ship the original consolidated checkpoint (as large again as the HF weights); nothing here
# loads it. huggingface_hub's own bookkeeping folder is not part of the snapshot either.
IGNORE_PATTERNS = ("original/*",)
MODEL_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _has_any(folder: Path, patterns: Iterable[str]) -> bool:
    return any(next(folder.glob(p), None) is not None for p in patterns)


def verify_snapshot(root: str | Path, *, require: Iterable[str] = (), source: str | None = None) -> dict:
    """Check that a snapshot holds complete models and/or adapters; return what it holds.

    A folder with ``config.json`` must have weights and a tokenizer, a folder with ``adapter_config.json``
    must have adapter weights, and every ``require``d subfolder must hold one of the two. Returns
    ``{"models": [...], "adapters": [...]}`` as paths relative to ``root`` (``.`` for the root itself).
    """
    root = Path(root)
    where = source or str(root)
    models, adapters = [], []
    for cfg in sorted(root.rglob("*config.json")):
        rel = cfg.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # huggingface_hub's .cache bookkeeping
        if cfg.name == "adapter_config.json":
            if not _has_any(cfg.parent, ADAPTER_WEIGHTS):
                raise user_error(
                    where,
                    str(rel),
                    "adapter_config.json without adapter weights",
                    f"the download is incomplete; delete {root} and {FETCH_HINT}",
                )
            adapters.append(str(rel))
        elif cfg.name == "config.json" and not (cfg.parent / "adapter_config.json").exists():
            missing = [
                what
                for what, pats in (("weights", MODEL_WEIGHTS), ("tokenizer", TOKENIZER_FILES))
                if not _has_any(cfg.parent, pats)
            ]
            if missing:
                raise user_error(
                    where,
                    str(rel),
                    f"model config.json without {' or '.join(missing)}",
                    f"the download is incomplete; delete {root} and {FETCH_HINT}",
                )
            models.append(str(rel))
    if not models and not adapters:
        raise user_error(
            where,
            None,
            "no config.json or adapter_config.json: neither a model nor an adapter",
            "check the repository name",
        )
    found = set(models) | set(adapters)
    for sub in require:
        if sub.strip("/") not in found:
            raise user_error(
                where, sub, "no model or adapter in this subfolder", f"use one of: {', '.join(sorted(found))}"
            )
    return {"models": models, "adapters": adapters}


def read_manifest(snapshot_dir: str | Path) -> dict:
    """The fetch manifest of a snapshot; a one-line fetch hint when the snapshot was never fetched."""
    path = Path(snapshot_dir) / MANIFEST
    if not path.is_file():
        raise user_error(snapshot_dir, MANIFEST, "no fetch manifest (not fetched, or fetched by hand)", FETCH_HINT)
    return json.loads(path.read_text(encoding="utf-8"))


class Hub(Protocol):
    """What fetching needs from the hub; tests pass their own."""

    def resolve(self, repo: str, revision: str) -> str: ...

    def download(self, repo: str, commit: str, local_dir: Path, ignore: list[str]) -> None: ...


class HuggingFaceHub:
    """huggingface_hub at ``HF_ENDPOINT`` (default huggingface.co); the token comes from ``HF_TOKEN`` as usual."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint

    def resolve(self, repo: str, revision: str) -> str:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            return HfApi(endpoint=self.endpoint).model_info(repo, revision=revision).sha
        except RevisionNotFoundError:
            raise user_error(
                f"{repo}@{revision}",
                "revision",
                "no such revision on the hub",
                "pin an existing commit hash, branch or tag",
            ) from None
        except RepositoryNotFoundError:
            raise user_error(
                repo,
                None,
                "repository not found or gated",
                "check the name; for a gated repo accept its licence and export HF_TOKEN",
            ) from None
        except (HfHubHTTPError, OSError) as err:
            raise user_error(
                repo,
                None,
                f"hub unreachable ({type(err).__name__}: {str(err).splitlines()[0]})",
                "fetch on a machine with internet access (a login node)",
            ) from None

    def download(self, repo: str, commit: str, local_dir: Path, ignore: list[str]) -> None:
        import shutil

        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            snapshot_download(
                repo_id=repo, revision=commit, local_dir=local_dir, ignore_patterns=ignore, endpoint=self.endpoint
            )
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
            raise user_error(
                f"{repo}@{commit}",
                None,
                f"download failed ({type(err).__name__}: {str(err).strip().splitlines()[0]})",
                "retry; check disk space and HF_TOKEN",
            ) from None
        # huggingface_hub's resume bookkeeping (locks, metadata) is not part of the snapshot
        shutil.rmtree(local_dir / ".cache", ignore_errors=True)


def fetch_hf(
    repo: str, revision: str, out_dir: str | Path, *, require: Iterable[str] = (), hub: Hub | None = None
) -> dict:
    """Download ``repo`` at ``revision`` into ``out_dir``, verify it and write its manifest; return the manifest.

    The revision is resolved to a commit first and that commit is downloaded, so a branch moving mid-download
    cannot mix files. Nothing appears at ``out_dir`` unless verification passes.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise user_error(repo, "fetch", "HF_HUB_OFFLINE=1 is set here", FETCH_HINT)
    hub = hub or HuggingFaceHub(os.environ.get("HF_ENDPOINT") or None)
    require = list(require)
    commit = hub.resolve(repo, revision)
    if not COMMIT_RE.match(revision):
        log.warning(
            "%s@%s is not pinned: it resolved to commit %s; use @%s in the config to pin it",
            repo,
            revision,
            commit,
            commit,
        )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        hub.download(repo, commit, tmp, list(IGNORE_PATTERNS))
        contents = verify_snapshot(tmp, require=require, source=f"{repo}@{revision}")
        files = {
            str(p.relative_to(tmp)): p.stat().st_size
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tmp).parts)
        }
        manifest = {
            "repo": repo,
            "revision": revision,
            "commit": commit,
            "fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **contents,
            "files": files,
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    log.info(
        "fetched %s@%s (commit %s) into %s: %d files, models %s, adapters %s",
        repo,
        revision,
        commit,
        out_dir,
        len(files),
        contents["models"] or "-",
        contents["adapters"] or "-",
    )
    return manifest
