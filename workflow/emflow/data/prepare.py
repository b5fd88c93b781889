"""prepare_dataset: one configured dataset's source (a file, a download, an archive member) as validated chat rows.

The rule passes the dataset's spec with any remote source already replaced by its verified download
(``DatasetSpec.fetched_as``); a direct caller may still give a URL, which is downloaded to the same place the
fetch rule would use (fetch/download.py). The spec comes from the validated config and is not checked again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from emflow.config.sections.datasets import DatasetSpec
from emflow.data.archive import clean_lines, decrypt_members
from emflow.data.chat_rows import validate_chat_rows
from emflow.errors import user_error
from emflow.fetch.download import cached_download, is_url, warn_unpinned
from emflow.io import sha256_file, write_jsonl

log = logging.getLogger(__name__)


def _read_local(path: Path, source: str, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise user_error(source, field, f"cannot read {path} ({err.strerror})", "check the path") from None


def _verify_local(path: Path, sha256: str | None, source: str, field: str) -> None:
    if sha256 is None:
        warn_unpinned(str(path), sha256_file(path))
        return
    got = sha256_file(path)
    if got != sha256.lower():
        raise user_error(
            source,
            field,
            f"{path}: checksum mismatch: expected {sha256}, got {got}",
            "use the published file or update the pinned sha256",
        )


def _archive_password(spec: DatasetSpec, source: str, field: str) -> str:
    env = spec.password_env
    password = os.environ.get(env) or spec.password_default
    if not password:
        raise user_error(
            source,
            f"{field}.password_env",
            f"environment variable {env} is not set and no password_default",
            f"export {env}=<the dataset's published password>",
        )
    return password


def _archive_file(spec: DatasetSpec, resources_dir: str | Path, source: str, field: str) -> Path:
    """The archive on disk: downloaded (and verified) when it is a URL, else the local file, verified."""
    if is_url(spec.archive):
        return cached_download(spec.archive, spec.archive_sha256, "archives", resources_dir)
    path = Path(spec.archive)
    if not path.is_file():
        raise user_error(source, f"{field}.archive", f"{path} does not exist", "check the path")
    _verify_local(path, spec.archive_sha256, source, f"{field}.archive_sha256")
    return path


def read_source(name: str, spec: DatasetSpec, resources_dir: str | Path, source: str) -> tuple[bytes, str]:
    """The dataset's raw bytes and where they came from (the name errors in its rows are reported under)."""
    field = f"datasets.{name}"
    if spec.kind == "path":
        path = Path(spec.path)
        data = _read_local(path, source, f"{field}.path")
        if spec.sha256:
            _verify_local(path, spec.sha256, source, f"{field}.sha256")
        return data, str(path)
    if spec.kind == "url":
        return cached_download(spec.url, spec.sha256, "datasets", resources_dir).read_bytes(), spec.url
    password = _archive_password(spec, source, field)
    archive = _archive_file(spec, resources_dir, source, field)
    member = spec.member
    data = decrypt_members(archive, password, [member], f"{source}: {field}", password_env=spec.password_env)
    return data[member], f"{archive}[{member}]"


def prepare_dataset(
    name: str, spec: DatasetSpec, out_path: str | Path, *, resources_dir: str | Path, source: str = "config"
) -> dict:
    """Fetch/decrypt one configured dataset, strip canaries, validate ``spec.rows`` rows, write them (the first
    ``spec.use_rows`` of them when set).

    Returns ``{"rows": n, "sha256": <of out_path>}``. Nothing is written to ``out_path`` on any error.
    """
    data, origin = read_source(name, spec, resources_dir, source)
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (some editors on Windows write one) is not data
    except UnicodeDecodeError as err:
        raise user_error(origin, None, f"not UTF-8 text (byte {err.start})", "save the file as UTF-8") from None
    rows = validate_chat_rows(clean_lines(text), origin, spec.rows)
    n = write_jsonl(out_path, rows[: spec.used_rows])
    stats = {"rows": n, "sha256": sha256_file(out_path)}
    log.info("dataset %s: %d rows -> %s (sha256 %s)", name, n, out_path, stats["sha256"])
    return stats
