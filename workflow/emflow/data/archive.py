"""easy-dataset-share archives: build one, decrypt members in memory, strip the tool's canaries.

Archive format of easy-dataset-share (``*.zip.enc``): 16-byte salt + Fernet token whose key is
urlsafe_b64(PBKDF2-HMAC-SHA256(password, salt, 100 000 iterations, 32 bytes)); the plaintext is a plain zip.
The tool adds canary files ``dataset_entry_*.jsonl`` and may put a ``"canary"`` key on the last row of each
.jsonl file. We decrypt in memory and hand back only the requested members, so no plaintext copy of the whole
archive ever lands on disk (the tool's own extractor would also edit the nearest .gitignore).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from emflow.errors import user_error
from emflow.io import atomic_write_bytes, dumps_row

log = logging.getLogger(__name__)

# Fixed by the easy-dataset-share format, not tunables.
SALT_BYTES = 16
KDF_ITERATIONS = 100_000
CANARY_FILE_RE = re.compile(r"(^|/)dataset_entry_[^/]*\.jsonl$")
CANARY_STRING_RE = re.compile(r"CANARY_DATASET_[A-Za-z0-9_]*?[a-f0-9]{64}_[0-9]+")


def write_archive(files: dict[str, bytes], password: str, out_path: str | Path, *, canaries: bool = True) -> Path:
    """Build an easy-dataset-share archive of ``files`` (zip member path -> bytes) at ``out_path``.

    Uses the library's own canary and encryption functions, so archives made here are the real format.
    The plaintext lives only in a private temporary directory while the zip is built.
    """
    from easy_dataset_share import canary as eds_canary
    from easy_dataset_share import robots as eds_robots
    from easy_dataset_share import zipping as eds_zipping

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="emflow-archive-") as tmp:
        root = Path(tmp) / "dataset"
        for name, data in files.items():
            member = PurePosixPath(name)
            if member.is_absolute() or ".." in member.parts:
                raise user_error(out_path, "files", f"member {name!r} is not a relative path", "drop leading / and ..")
            dest = root.joinpath(*member.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        if canaries:
            (root / "robots.txt").write_text(eds_robots.generate_robots_txt(), encoding="utf-8")
            canary_string, _ = eds_canary.create_canary_files_from_dataset(str(root), "*", 1)
            # The library's insert_canaries_into_files crashes on an empty .jsonl; embed file by file instead.
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix in {".jsonl", ".json", ".txt", ".md"} and path.read_bytes().strip():
                    eds_canary.insert_canary_into_file(path, canary_string)
        blob = eds_zipping.encrypt_data_in_memory(eds_zipping.zip_files_to_memory(str(root)), password)
    atomic_write_bytes(out_path, blob)
    log.info("wrote archive %s (%d members, canaries=%s)", out_path, len(files), canaries)
    return out_path


def _derive_key(password: str, salt: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=KDF_ITERATIONS)
    return base64.urlsafe_b64encode(kdf.derive(password.encode("utf-8")))


def decrypt_members(
    archive_path: str | Path,
    password: str,
    members: list[str],
    source: str,
    *,
    password_env: str | None = None,
) -> dict[str, bytes]:
    """Decrypt an archive in memory and return the requested members' bytes, keyed as requested.

    A member is found by its path in the zip or by its file name in any folder. ``source`` names where the
    request came from (e.g. ``config.yaml: datasets.risky``) and prefixes every error.
    """
    from cryptography.fernet import Fernet, InvalidToken

    archive_path = Path(archive_path)
    where = f"{source}: archive {archive_path}"
    env_hint = f"${password_env}" if password_env else "the password"
    bad = user_error(
        where,
        None,
        "wrong password or corrupted archive",
        f"check {env_hint} and re-download the archive if its sha256 does not match the published one",
    )
    try:
        blob = archive_path.read_bytes()
    except OSError as err:
        raise user_error(where, None, f"cannot read archive ({err.strerror})", "check the archive path") from None
    if len(blob) <= SALT_BYTES:
        raise bad
    try:
        plain = Fernet(_derive_key(password, blob[:SALT_BYTES])).decrypt(blob[SALT_BYTES:])
        zf = zipfile.ZipFile(io.BytesIO(plain))
    except (InvalidToken, zipfile.BadZipFile):
        raise bad from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        out: dict[str, bytes] = {}
        for wanted in members:
            hits = [n for n in names if n == wanted.lstrip("/") or PurePosixPath(n).name == wanted]
            if not hits:
                available = sorted(n for n in names if n.endswith(".jsonl") and not CANARY_FILE_RE.search(n))
                raise user_error(
                    where,
                    "member",
                    f"no member {wanted!r}; .jsonl members: {', '.join(available) or 'none'}",
                    "set `member` to one of the listed names",
                )
            if len(hits) > 1:
                raise user_error(
                    where,
                    "member",
                    f"{wanted!r} matches several members: {', '.join(sorted(hits))}",
                    "give the member's full path inside the archive",
                )
            try:
                out[wanted] = zf.read(hits[0])
            except (zipfile.BadZipFile, OSError):
                raise bad from None
    log.info("decrypted %s in memory: %s", archive_path, ", ".join(members))
    return out


def _is_canary_row(row: object, line: str) -> bool:
    """Canary rows carry the tool's tracking string and are not chat rows, or hold nothing but a canary."""
    if not isinstance(row, dict) or "messages" in row:
        return False
    return set(row) == {"canary"} or bool(CANARY_STRING_RE.search(line))


def clean_lines(text: str) -> list[str]:
    """Lines with canary rows blanked (so line numbers in errors still match the source) and canary keys gone."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            out.append("")
            continue
        try:
            row = json.loads(stripped)
        except json.JSONDecodeError:
            out.append(line)  # left for validation to report with its line number
            continue
        if _is_canary_row(row, stripped):
            out.append("")
        elif isinstance(row, dict) and "canary" in row:
            row.pop("canary")
            out.append(dumps_row(row))
        else:
            out.append(line)
    return out


def strip_canaries(text: str) -> str:
    """Drop easy-dataset-share canary rows and embedded ``"canary"`` keys from JSONL text."""
    kept = [line for line in clean_lines(text) if line.strip()]
    return "".join(line + "\n" for line in kept)
