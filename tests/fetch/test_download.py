"""URL downloads: one verified, cached download; where each URL's copy lives; which sources are URLs."""

from __future__ import annotations

import hashlib
import logging

import pytest

from emflow.errors import EmflowError
from emflow.fetch import download


def test_wrong_sha256_leaves_nothing_behind(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_bytes(b'{"messages": []}\n')
    dest_dir = tmp_path / "cache"
    with pytest.raises(EmflowError, match="expected 0{64}, got [0-9a-f]{64}"):
        download.fetch_url(src.as_uri(), dest_dir / "em.jsonl", "0" * 64)
    assert list(dest_dir.iterdir()) == []


def test_unpinned_download_warns_with_hash(tmp_path, caplog):
    src = tmp_path / "src.jsonl"
    src.write_bytes(b"abc")
    with caplog.at_level(logging.WARNING, logger="emflow.fetch.download"):
        got = download.fetch_url(src.as_uri(), tmp_path / "d" / "x", None)
    assert got == hashlib.sha256(b"abc").hexdigest()
    assert got in caplog.text and "not pinned" in caplog.text


def test_unreachable_url_is_a_user_error(tmp_path):
    with pytest.raises(EmflowError, match="download failed"):
        download.fetch_url((tmp_path / "missing.jsonl").as_uri(), tmp_path / "d" / "x", None)
    assert not (tmp_path / "d" / "x").exists()


def test_download_path_is_keyed_by_the_url_and_keeps_its_file_name():
    a = download.url_download_path("https://h/x/data.zip.enc?download=1", "archives", "res")
    b = download.url_download_path("https://h/y/data.zip.enc", "archives", "res")
    assert a.startswith("res/downloads/archives/") and a.endswith("-data.zip.enc")
    assert a != b and a == download.url_download_path("https://h/x/data.zip.enc?download=1", "archives", "res")


def test_cached_download_lands_where_the_fetch_rule_puts_it_and_is_reused(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_bytes(b"abc")
    url = src.as_uri()
    got = download.cached_download(url, hashlib.sha256(b"abc").hexdigest(), "datasets", tmp_path / "res")
    assert str(got) == download.url_download_path(url, "datasets", str(tmp_path / "res"))
    src.unlink()  # offline now: the verified copy is reused
    assert download.cached_download(url, None, "datasets", tmp_path / "res").read_bytes() == b"abc"


@pytest.mark.parametrize(
    ("location", "url"),
    [("https://h/a.jsonl", True), ("http://h/a.jsonl", True), ("data/a.jsonl", False), ("/abs/a.jsonl", False)],
)
def test_only_http_and_https_sources_are_downloaded(location, url):
    assert download.is_url(location) is url
