"""EM datasets: fetch, decrypt (easy-dataset-share archives), strip canaries, validate chat rows, seeded split.

Archive format of easy-dataset-share (``*.zip.enc``): 16-byte salt + Fernet token whose key is
urlsafe_b64(PBKDF2-HMAC-SHA256(password, salt, 100 000 iterations, 32 bytes)); the plaintext is a plain zip.
The tool adds canary files ``dataset_entry_*.jsonl`` and may put a ``"canary"`` key on the last row of each
.jsonl file. We decrypt in memory and write only the validated rows, so no plaintext copy of the whole
archive ever lands on disk (the tool's own extractor would also edit the nearest .gitignore).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from emflow.errors import user_error
from emflow.io import atomic_write_bytes, dumps_row, read_jsonl, sha256_file, write_jsonl

log = logging.getLogger(__name__)

# Fixed by the easy-dataset-share format, not tunables.
SALT_BYTES = 16
KDF_ITERATIONS = 100_000
CANARY_FILE_RE = re.compile(r"(^|/)dataset_entry_[^/]*\.jsonl$")
CANARY_STRING_RE = re.compile(r"CANARY_DATASET_[A-Za-z0-9_]*?[a-f0-9]{64}_[0-9]+")
ROLES = ("system", "user", "assistant")
CHAT_FIX = (
    'each line must be {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
)


# --------------------------------------------------------------------------------------------- archives


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


# --------------------------------------------------------------------------------------------- canaries


def _is_canary_row(row: object, line: str) -> bool:
    """Canary rows carry the tool's tracking string and are not chat rows, or hold nothing but a canary."""
    if not isinstance(row, dict) or "messages" in row:
        return False
    return set(row) == {"canary"} or bool(CANARY_STRING_RE.search(line))


def _clean_lines(text: str) -> list[str]:
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
    kept = [line for line in _clean_lines(text) if line.strip()]
    return "".join(line + "\n" for line in kept)


# --------------------------------------------------------------------------------------------- download


def fetch_url(url: str, dest: str | Path, sha256: str | None, *, timeout_s: float = 60.0) -> str:
    """Download ``url`` to ``dest`` via a temporary sibling; verify ``sha256``. Returns the file's sha256.

    An existing ``dest`` whose hash matches is reused (jobs run offline once the cache is filled).
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        got = sha256_file(dest)
        if expected is None or got == expected:
            log.info("using cached %s (sha256 %s)", dest, got)
            if expected is None:
                _warn_unpinned(url, got)
            return got
        log.warning("cached %s has sha256 %s, expected %s; downloading again", dest, got, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"fetch {dest.name}", leave=False) as bar:
                        while block := resp.read(1 << 20):
                            fh.write(block)
                            h.update(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                raise user_error(
                    url,
                    None,
                    f"download failed ({reason})",
                    "fetch on a machine with internet access, or point the config at a local `path`",
                ) from None
        got = h.hexdigest()
        if expected is not None and got != expected:
            raise user_error(
                url,
                "sha256",
                f"checksum mismatch: expected {expected}, got {got}",
                "the file changed upstream or the download is corrupt; check the URL, then update the pinned sha256",
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded %s -> %s (sha256 %s)", url, dest, got)
    if expected is None:
        _warn_unpinned(url, got)
    return got


def _warn_unpinned(url: str, got: str) -> None:
    log.warning("%s is not pinned; its sha256 is %s; set it in the config to detect upstream changes", url, got)


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in {"http", "https", "file", "ftp"}


def _cached_download(url: str, cache_dir: Path, sha256: str | None) -> Path:
    # One cache file per URL: the name keeps the basename readable, the hash prefix keeps URLs apart.
    base = PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
    dest = cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"
    fetch_url(url, dest, sha256)
    return dest


# --------------------------------------------------------------------------------------------- validation


def validate_chat_rows(lines: Iterable[str], source: str, expected_rows: int | None = None) -> list[dict]:
    """Parse and check JSONL chat rows; return ``[{"messages": [{"role", "content"}, ...]}, ...]``.

    Blank lines are skipped but counted, so ``source:line`` in errors points at the real line.
    """
    rows: list[dict] = []
    for i, line in enumerate(tqdm(lines, desc=f"validate {Path(source).name}", unit="row", leave=False), 1):
        if not line.strip():
            continue
        at = f"{source}:{i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise user_error(at, None, f"not valid JSON ({err.msg} at column {err.colno})", CHAT_FIX) from None
        if not isinstance(row, dict):
            raise user_error(at, None, f"expected a JSON object, got {type(row).__name__}", CHAT_FIX)
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise user_error(at, "messages", "missing or not a non-empty list", CHAT_FIX)
        clean = []
        for j, msg in enumerate(messages):
            field = f"messages[{j}]"
            if not isinstance(msg, dict):
                raise user_error(at, field, f"expected an object, got {type(msg).__name__}", CHAT_FIX)
            role, content = msg.get("role"), msg.get("content")
            if role not in ROLES:
                raise user_error(at, f"{field}.role", f"{role!r} is not one of {', '.join(ROLES)}", CHAT_FIX)
            if not isinstance(content, str):
                raise user_error(at, f"{field}.content", f"expected a string, got {type(content).__name__}", CHAT_FIX)
            if not content.strip():
                raise user_error(at, f"{field}.content", "empty content", "drop the row or fill in the message")
            clean.append({"role": role, "content": content})
        if clean[-1]["role"] != "assistant":
            raise user_error(
                at,
                "messages",
                f"last turn is {clean[-1]['role']!r}, not 'assistant'",
                "end every row with the assistant reply that training should learn",
            )
        rows.append({"messages": clean})
    if not rows:
        raise user_error(source, None, "no rows", "check that the file is the dataset you meant")
    if expected_rows is not None and len(rows) != expected_rows:
        raise user_error(
            source,
            "rows",
            f"expected {expected_rows} rows, found {len(rows)}",
            "check that this is the right file, or correct the `rows` value in the config",
        )
    return rows


# --------------------------------------------------------------------------------------------- prepare


SPEC_KEYS = {
    "path": {"path", "sha256"},
    "url": {"url", "sha256"},
    "archive": {"archive", "member", "password_env", "password_default", "archive_sha256"},
}
COMMON_KEYS = {"rows", "eval_rows"}


def _check_spec(name: str, spec: dict, source: str) -> str:
    field = f"datasets.{name}"
    if not isinstance(spec, dict):
        raise user_error(source, field, "expected a mapping", "give one of `path`, `url` or `archive`")
    kinds = [k for k in SPEC_KEYS if k in spec]
    if len(kinds) != 1:
        raise user_error(
            source,
            field,
            f"needs exactly one of path, url, archive (got {', '.join(kinds) or 'none'})",
            "keep exactly one source key",
        )
    kind = kinds[0]
    allowed = SPEC_KEYS[kind] | COMMON_KEYS
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise user_error(
            source,
            f"{field}.{unknown[0]}",
            f"unknown key for a `{kind}` dataset",
            f"use only {', '.join(sorted(allowed))}",
        )
    if kind == "archive":
        for key in ("member", "password_env"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise user_error(source, f"{field}.{key}", "required for an archive dataset", f"set `{key}`")
    rows = spec.get("rows")
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0):
        raise user_error(source, f"{field}.rows", f"expected a positive integer or null, got {rows!r}", None)
    return kind


def _read_local(path: Path, source: str, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise user_error(source, field, f"cannot read {path} ({err.strerror})", "check the path") from None


def _verify_local(path: Path, sha256: str | None, source: str, field: str) -> None:
    if sha256 is None:
        _warn_unpinned(str(path), sha256_file(path))
        return
    got = sha256_file(path)
    if got != sha256.lower():
        raise user_error(
            source,
            field,
            f"{path}: checksum mismatch: expected {sha256}, got {got}",
            "use the published file or update the pinned sha256",
        )


def prepare_dataset(
    name: str, spec: dict, out_path: str | Path, *, cache_dir: str | Path, source: str = "config"
) -> dict:
    """Fetch/decrypt one configured dataset, strip canaries, validate, write ``{"messages": [...]}`` rows.

    Returns ``{"rows": n, "sha256": <of out_path>}``. Nothing is written to ``out_path`` on any error.
    """
    kind = _check_spec(name, spec, source)
    field = f"datasets.{name}"
    cache_dir = Path(cache_dir)
    if kind == "path":
        path = Path(spec["path"])
        data = _read_local(path, source, f"{field}.path")
        if spec.get("sha256"):
            _verify_local(path, spec["sha256"], source, f"{field}.sha256")
        origin = str(path)
    elif kind == "url":
        path = _cached_download(spec["url"], cache_dir, spec.get("sha256"))
        data = path.read_bytes()
        origin = spec["url"]
    else:
        env = spec["password_env"]
        password = os.environ.get(env) or spec.get("password_default")
        if not password:
            raise user_error(
                source,
                f"{field}.password_env",
                f"environment variable {env} is not set and no password_default",
                f"export {env}=<the dataset's published password>",
            )
        archive = str(spec["archive"])
        if _is_url(archive):
            archive_path = _cached_download(archive, cache_dir, spec.get("archive_sha256"))
        else:
            archive_path = Path(archive)
            if not archive_path.is_file():
                raise user_error(source, f"{field}.archive", f"{archive_path} does not exist", "check the path")
            _verify_local(archive_path, spec.get("archive_sha256"), source, f"{field}.archive_sha256")
        member = spec["member"]
        data = decrypt_members(archive_path, password, [member], f"{source}: {field}", password_env=env)[member]
        origin = f"{archive_path}[{member}]"
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (some editors on Windows write one) is not data
    except UnicodeDecodeError as err:
        raise user_error(origin, None, f"not UTF-8 text (byte {err.start})", "save the file as UTF-8") from None
    rows = validate_chat_rows(_clean_lines(text), origin, spec.get("rows"))
    n = write_jsonl(out_path, rows)
    stats = {"rows": n, "sha256": sha256_file(out_path)}
    log.info("dataset %s: %d rows -> %s (sha256 %s)", name, n, out_path, stats["sha256"])
    return stats


# --------------------------------------------------------------------------------------------- split


def _split_key(split_seed: int, name: str, row: dict) -> str:
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{split_seed}:{name}:{canonical}".encode()).hexdigest()


def split_dataset(
    in_path: str | Path,
    train_out: str | Path,
    eval_out: str | Path,
    *,
    eval_rows: int,
    split_seed: int,
    name: str,
) -> dict:
    """Seeded train/eval split: the ``eval_rows`` rows with the smallest hash of (seed, name, row) go to eval.

    Each row's fate depends only on the seed, the dataset's name and the row itself, so the split is the same
    on every run and unaffected by other datasets or training seeds. Both parts keep the original order.
    """
    rows = read_jsonl(in_path)
    if isinstance(eval_rows, bool) or not isinstance(eval_rows, int) or eval_rows < 0 or eval_rows >= len(rows):
        raise user_error(
            in_path,
            f"datasets.{name}.eval_rows",
            f"{eval_rows!r} is not in 0..{len(rows) - 1} ({len(rows)} rows)",
            "choose fewer eval rows than the dataset has",
        )
    ranked = sorted(range(len(rows)), key=lambda i: (_split_key(split_seed, name, rows[i]), i))
    eval_idx = set(ranked[:eval_rows])
    train = [r for i, r in enumerate(rows) if i not in eval_idx]
    held = [r for i, r in enumerate(rows) if i in eval_idx]
    write_jsonl(eval_out, held)
    write_jsonl(train_out, train)
    stats = {
        "train_rows": len(train),
        "eval_rows": len(held),
        "train_sha256": sha256_file(train_out),
        "eval_sha256": sha256_file(eval_out),
    }
    log.info("split %s (seed %d): %d train / %d eval", name, split_seed, len(train), len(held))
    return stats


# --------------------------------------------------------------------------------------------- CLI


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cli_prepare(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="emflow prepare-dataset", description="Fetch/decrypt and validate one dataset.")
    p.add_argument("--name", required=True, help="dataset name (the key under `datasets:` in the config)")
    p.add_argument("--spec", required=True, help="the dataset's config entry as JSON")
    p.add_argument("--cache-dir", required=True, help="where downloads are cached")
    p.add_argument("--out", required=True, help="validated JSONL output")
    p.add_argument("--stats-out", help="optional JSON file for {rows, sha256}")
    args = p.parse_args(argv)
    _setup_logging()
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as err:
        raise user_error(
            "--spec", None, f"not valid JSON ({err.msg})", "pass the dataset's config entry as JSON"
        ) from None
    stats = prepare_dataset(args.name, spec, args.out, cache_dir=args.cache_dir, source="--spec")
    if args.stats_out:
        from emflow.io import atomic_write_json

        atomic_write_json(args.stats_out, stats)
    print(json.dumps(stats))


def cli_split(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="emflow split-dataset", description="Seeded train/eval split of a dataset.")
    p.add_argument("--name", required=True, help="dataset name (part of the split hash)")
    p.add_argument("--in", dest="in_path", required=True, help="validated JSONL from prepare-dataset")
    p.add_argument("--train-out", required=True)
    p.add_argument("--eval-out", required=True)
    p.add_argument("--eval-rows", required=True, type=int)
    p.add_argument("--split-seed", required=True, type=int)
    args = p.parse_args(argv)
    _setup_logging()
    stats = split_dataset(
        args.in_path,
        args.train_out,
        args.eval_out,
        eval_rows=args.eval_rows,
        split_seed=args.split_seed,
        name=args.name,
    )
    print(json.dumps(stats))
