"""Models, adapters and question files: where they come from, how a fetch is verified, where they live on disk.

Hub assets are fetched once, where the internet is (a local rule on a cluster's login node), into
``<resources_dir>/hf/OWNER/NAME/REVISION`` beside a manifest (``emflow_asset.json``) recording the repository,
the requested revision, the commit it resolved to and every file's size; training and generation only ever
read that folder, with the hub switched off.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
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
    def subfolder(self) -> str | None:
        return self._parts()[2] if self.is_hub else None

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
        sub = self.subfolder
        return f"{self.snapshot_dir}/{sub}" if sub else self.snapshot_dir


SMALL_FILE = 1 << 20  # files up to this size are hashed whole; larger ones (weights) by size and mtime


def local_fingerprint(folder: str | Path) -> str:
    """Content identity of a local model or adapter folder, cheap enough for every DAG parse.

    Small files (configs, tokenizer, adapter config) are hashed whole; weight files by name, size and
    modification time, so overwriting weights in place changes the fingerprint without reading gigabytes.
    """
    root = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if st.st_size <= SMALL_FILE:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def asset_identity(
    spec: str, *, resources_dir: str, built_under: tuple[str, ...] = (), field: str = "config", source: str = "config"
) -> str:
    """What makes results from this asset out of date when it changes: the spec, plus a content fingerprint
    for a local folder the workflow does not build itself.

    A hub spec pins its revision (the fetch records the commit it resolved to; an unpinned one logs the commit
    to pin). A folder under one of ``built_under`` (the demo's assets) is an output of a rule, which Snakemake
    tracks itself. Any other local folder must exist now: a missing one would otherwise be silently ignored by
    jobs whose outputs exist.
    """
    asset = Asset(spec, resources_dir)
    if asset.is_hub or any(Path(spec).is_relative_to(Path(b)) for b in built_under):
        return spec
    if not Path(spec).is_dir():
        raise user_error(
            source,
            field,
            f"local directory {spec!r} does not exist",
            f"point it at a model/adapter folder, or use hf:OWNER/NAME@REVISION and {FETCH_HINT}",
        )
    return f"{spec}#{local_fingerprint(spec)}"


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


# --------------------------------------------------------------------------------------------- fetching


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


# --------------------------------------------------------------------------------------------- CLI


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cli_fetch_hf(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="emflow fetch-hf", description=fetch_hf.__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="OWNER/NAME on the hub")
    ap.add_argument("--revision", required=True, help="commit hash (pinned), branch or tag")
    ap.add_argument("--out", required=True, help="snapshot folder to create")
    ap.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="SUBFOLDER",
        help="a subfolder that must hold a model or adapter (repeatable), e.g. a persona",
    )
    args = ap.parse_args(argv)
    _setup_logging()
    fetch_hf(args.repo, args.revision, args.out, require=args.require)


def cli_fetch_url(argv: list[str] | None = None) -> None:
    from emflow.data.prepare import fetch_url

    ap = argparse.ArgumentParser(prog="emflow fetch-url", description="Download a file and verify its sha256.")
    ap.add_argument("--url", required=True)
    ap.add_argument("--sha256", default=None, help="expected sha256; empty = unpinned (the hash is logged)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    _setup_logging()
    fetch_url(args.url, args.out, args.sha256 or None)


def url_download_path(url: str, kind: str, resources_dir: str = "resources") -> str:
    """Where a URL download lives: keyed by the URL's hash, so two files of the same name never collide and
    datasets that are members of one archive share one download."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{resources_dir}/downloads/{kind}/{key}-{Path(url.split('?')[0]).name}"


def is_url(location: str) -> bool:
    return re.match(r"^https?://", location) is not None


def question_sources(config: dict) -> list[tuple[str, str | None, str]]:
    """``(file as configured, sha256, local path)`` for ``questions.file`` and every ``questions.extra_files``."""
    q = config["questions"]
    res = config.get("resources_dir", "resources")
    entries = [{"file": q["file"], "sha256": q.get("sha256")}, *q.get("extra_files", [])]
    return [
        (e["file"], e.get("sha256"), url_download_path(e["file"], "questions", res) if is_url(e["file"]) else e["file"])
        for e in entries
    ]
