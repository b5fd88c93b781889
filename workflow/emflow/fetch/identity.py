"""What makes results out of date when an asset changes: its spec, plus a content fingerprint of a local folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from emflow.errors import user_error
from emflow.fetch.asset import Asset
from emflow.fetch.hub import FETCH_HINT

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
