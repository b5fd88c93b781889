"""URL downloads: which sources are URLs, where a download lives, and the one verified, cached download.

Every URL the config names (a dataset, an archive, a question file) is fetched by the ``fetch_url`` rule to
``url_download_path``; later stages read that file offline. ``cached_download`` puts a direct caller's download
at the same place, so one URL has one local copy however it is reached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from emflow.errors import user_error
from emflow.io import sha256_file

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^https?://")


def is_url(location: str) -> bool:
    """A configured source the workflow downloads (http/https); anything else is a local path."""
    return URL_RE.match(location) is not None


def url_download_path(url: str, kind: str, resources_dir: str = "resources") -> str:
    """Where a URL download lives: keyed by the URL's hash, so two files of the same name never collide and
    datasets that are members of one archive share one download."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{resources_dir}/downloads/{kind}/{key}-{Path(url.split('?')[0]).name}"


def warn_unpinned(location: str, got: str) -> None:
    log.warning("%s is not pinned; its sha256 is %s; set it in the config to detect upstream changes", location, got)


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
                warn_unpinned(url, got)
            return got
        log.warning("cached %s has sha256 %s, expected %s; downloading again", dest, got, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            got = _stream(url, fh, dest.name, timeout_s)
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
        warn_unpinned(url, got)
    return got


def _stream(url: str, fh, label: str, timeout_s: float) -> str:
    """Copy ``url``'s body into ``fh`` with a progress bar; return its sha256. Failure is one line."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"fetch {label}", leave=False) as bar:
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
    return h.hexdigest()


def cached_download(url: str, sha256: str | None, kind: str, resources_dir: str | Path) -> Path:
    """``url`` at its ``url_download_path`` (downloaded unless a copy with the pinned hash is there)."""
    dest = Path(url_download_path(url, kind, str(resources_dir)))
    fetch_url(url, dest, sha256)
    return dest
