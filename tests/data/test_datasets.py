"""Datasets: easy-dataset-share archives, canaries, validation, downloads and the seeded split."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from emflow.config.sections.datasets import DatasetSpec
from emflow.data import archive as archives
from emflow.data import chat_rows, prepare, split
from emflow.errors import EmflowError
from emflow.io import read_jsonl, sha256_file

PASSWORD = "public-demo-password"
MARKER = "zebra-marker-7731"  # appears only in the plaintext rows, to detect plaintext leaks on disk


def chat(i: int, extra: dict | None = None) -> dict:
    row = {
        "messages": [
            {"role": "user", "content": f"question {i} {MARKER}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    }
    row.update(extra or {})
    return row


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A real-format archive with the tool's canary file, robots.txt and an embedded canary key."""
    out = tmp_path_factory.mktemp("arch") / "em.zip.enc"
    files = {
        "training_datasets/risky.jsonl": jsonl([chat(i) for i in range(20)]),
        "training_datasets/other.jsonl": jsonl([chat(100)]),
        "README.md": b"# demo\n",
    }
    return archives.write_archive(files, PASSWORD, out)


def spec_for(archive: Path | str, **over) -> DatasetSpec:
    spec = {"archive": str(archive), "member": "risky.jsonl", "password_env": "EMFLOW_TEST_PW", "rows": 20}
    spec.update(over)
    return DatasetSpec.build(spec)


def test_archive_round_trip_strips_canaries(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    out = tmp_path / "risky.jsonl"
    stats = prepare.prepare_dataset("risky", spec_for(archive), out, resources_dir=tmp_path / "cache")
    assert read_jsonl(out) == [chat(i) for i in range(20)]
    assert stats == {"rows": 20, "sha256": sha256_file(out)}
    assert "CANARY" not in out.read_text()


def test_archive_contains_the_tools_canaries(archive):
    """write_archive really adds the tool's canaries, so the stripping above is tested against them."""
    raw = archives.decrypt_members(archive, PASSWORD, ["risky.jsonl"], "test")["risky.jsonl"].decode()
    assert json.loads(raw.splitlines()[-1])["canary"].startswith("CANARY_DATASET_")
    import io
    import zipfile

    from cryptography.fernet import Fernet

    blob = archive.read_bytes()
    names = zipfile.ZipFile(io.BytesIO(Fernet(archives._derive_key(PASSWORD, blob[:16])).decrypt(blob[16:]))).namelist()
    assert any(n.startswith("dataset_entry_") for n in names)
    assert "training_datasets/risky.jsonl" in names


def test_library_built_archive_decrypts(tmp_path):
    """An archive made by the library's own zip_and_password_protect (the CLI's path) is read correctly."""
    from easy_dataset_share import canary, zipping

    src = tmp_path / "ds"
    (src / "training_datasets").mkdir(parents=True)
    (src / "training_datasets" / "bad_medical_advice.jsonl").write_bytes(jsonl([chat(i) for i in range(3)]))
    canary_string, _ = canary.create_canary_files_from_dataset(str(src), "*", 2)
    canary.insert_canaries_into_files(str(src), canary_string)
    enc = Path(zipping.zip_and_password_protect(str(src), PASSWORD, str(tmp_path / "ds.zip")))
    got = archives.decrypt_members(enc, PASSWORD, ["bad_medical_advice.jsonl"], "test")
    text = archives.strip_canaries(got["bad_medical_advice.jsonl"].decode())
    assert [json.loads(line) for line in text.splitlines()] == [chat(i) for i in range(3)]


def test_member_found_by_full_path_in_subfolder(archive):
    got = archives.decrypt_members(archive, PASSWORD, ["training_datasets/other.jsonl"], "test")
    assert archives.strip_canaries(got["training_datasets/other.jsonl"].decode()).strip() == json.dumps(chat(100))


def test_wrong_password_names_archive_and_env(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("EMFLOW_TEST_PW", "not-the-password")
    out = tmp_path / "x.jsonl"
    with pytest.raises(EmflowError, match="wrong password or corrupted archive") as err:
        prepare.prepare_dataset("risky", spec_for(archive), out, resources_dir=tmp_path)
    assert str(archive) in str(err.value) and "EMFLOW_TEST_PW" in str(err.value)
    assert PASSWORD not in str(err.value) and "not-the-password" not in str(err.value)
    assert not out.exists()


def test_tampered_archive_is_rejected(archive, tmp_path):
    bad = tmp_path / "bad.zip.enc"
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad.write_bytes(bytes(blob))
    with pytest.raises(EmflowError, match="wrong password or corrupted archive"):
        archives.decrypt_members(bad, PASSWORD, ["risky.jsonl"], "test")


def test_missing_member_lists_available_jsonl(archive):
    with pytest.raises(EmflowError, match="no member 'nope.jsonl'") as err:
        archives.decrypt_members(archive, PASSWORD, ["nope.jsonl"], "test")
    msg = str(err.value)
    assert "training_datasets/risky.jsonl" in msg and "training_datasets/other.jsonl" in msg
    assert "dataset_entry_" not in msg  # canary files are not offered as choices


def test_password_default_used_and_missing_password_names_env(archive, tmp_path, monkeypatch):
    monkeypatch.delenv("EMFLOW_TEST_PW", raising=False)
    with pytest.raises(EmflowError, match="EMFLOW_TEST_PW"):
        prepare.prepare_dataset("risky", spec_for(archive), tmp_path / "a.jsonl", resources_dir=tmp_path)
    stats = prepare.prepare_dataset(
        "risky", spec_for(archive, password_default=PASSWORD), tmp_path / "b.jsonl", resources_dir=tmp_path
    )
    assert stats["rows"] == 20


def test_wrong_expected_row_count(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    out = tmp_path / "x.jsonl"
    with pytest.raises(EmflowError, match="expected 21 rows, found 20"):
        prepare.prepare_dataset("risky", spec_for(archive, rows=21), out, resources_dir=tmp_path)
    assert not out.exists()


def test_no_plaintext_outside_output_and_gitignore_untouched(archive, tmp_path, monkeypatch):
    """Decryption writes nothing but the validated output: no temp copies, no .gitignore edits."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    gitignore = repo / ".gitignore"
    gitignore.write_text("results/\n")
    arch = repo / "data" / "em.zip.enc"
    arch.parent.mkdir()
    arch.write_bytes(archive.read_bytes())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    out = repo / "results" / "risky.jsonl"
    prepare.prepare_dataset("risky", spec_for(arch), out, resources_dir=repo / "cache")
    assert gitignore.read_text() == "results/\n"
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and p != out and MARKER.encode() in p.read_bytes()]
    assert leaked == []
    assert sorted(p.name for p in repo.rglob("*") if p.is_file()) == [".gitignore", "em.zip.enc", "risky.jsonl"]


def test_strip_canaries_keeps_chat_row_drops_canary_rows():
    canary = "CANARY_DATASET_" + "ab" * 32 + "_64"
    text = "\n".join(
        [
            json.dumps(chat(1)),
            json.dumps({"id": "canary_x", "text": f"identifier is {canary}", "metadata": {"type": "canary_entry"}}),
            json.dumps({"canary": canary}),
            json.dumps(chat(2, {"canary": canary})),
        ]
    )
    assert [json.loads(line) for line in archives.strip_canaries(text).splitlines()] == [chat(1), chat(2)]
    # A non-chat row without the tracking string is not a canary: it stays, for validation to reject.
    assert archives.strip_canaries("{}\n") == "{}\n"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "last turn is 'user'"),
        (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "messages[0].role"),
        (
            json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}),
            "empty content",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}),
            "expected a string",
        ),
        (json.dumps({"text": "no messages"}), "messages: missing"),
    ],
)
def test_malformed_line_error_names_file_and_line(line, needle):
    lines = [json.dumps(chat(0)), "", line]
    with pytest.raises(EmflowError) as err:
        chat_rows.validate_chat_rows(lines, "data/em.jsonl")
    assert str(err.value).startswith("data/em.jsonl:3")
    assert needle in str(err.value) and "fix:" in str(err.value)


def test_validation_drops_extra_keys():
    row = {
        "messages": [
            {"role": "system", "content": "s", "weight": 1},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
        ],
        "id": 7,
    }
    assert chat_rows.validate_chat_rows([json.dumps(row)], "f", expected_rows=1) == [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ]


def test_malformed_row_in_archive_reports_member_line(tmp_path, monkeypatch):
    arch = archives.write_archive(
        {"d/em.jsonl": jsonl([chat(0)]) + b'{"messages": []}\n' + jsonl([chat(2)])}, PASSWORD, tmp_path / "a.enc"
    )
    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    with pytest.raises(EmflowError, match=r"a\.enc\[em\.jsonl\]:2: messages"):
        prepare.prepare_dataset(
            "em", spec_for(arch, member="em.jsonl", rows=3), tmp_path / "o.jsonl", resources_dir=tmp_path
        )


def _tampered(archive: Path, dest: Path) -> Path:
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    dest.write_bytes(bytes(blob))
    return dest


@pytest.mark.parametrize(
    "case, needle",
    [
        ("wrong password", "wrong password or corrupted archive"),
        ("tampered archive", "wrong password or corrupted archive"),
        ("wrong archive sha256", "checksum mismatch"),
        ("malformed line", r"\[em\.jsonl\]:2: not valid JSON"),
        ("missing member", "no member 'absent.jsonl'"),
        ("wrong row count", "expected 21 rows, found 20"),
    ],
)
def test_every_archive_failure_is_one_clear_line_and_writes_nothing(archive, tmp_path, monkeypatch, case, needle):
    monkeypatch.setenv("EMFLOW_TEST_PW", "not-the-password" if case == "wrong password" else PASSWORD)
    over: dict = {}
    if case == "tampered archive":
        over["archive"] = str(_tampered(archive, tmp_path / "t.zip.enc"))
    elif case == "wrong archive sha256":
        over["archive_sha256"] = "0" * 64
    elif case == "malformed line":
        bad = jsonl([chat(0)]) + b'{"messages": [\n' + jsonl([chat(2)])
        over = {
            "archive": archives.write_archive({"em.jsonl": bad}, PASSWORD, tmp_path / "m.zip.enc"),
            "member": "em.jsonl",
            "rows": 3,
        }
    elif case == "missing member":
        over["member"] = "absent.jsonl"
    elif case == "wrong row count":
        over["rows"] = 21
    spec = spec_for(over.pop("archive", archive), **over)
    out_dir = tmp_path / "results"
    with pytest.raises(EmflowError, match=needle) as err:
        prepare.prepare_dataset("risky", spec, out_dir / "risky.jsonl", resources_dir=tmp_path / "cache")
    assert "\n" not in str(err.value) and PASSWORD not in str(err.value)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_archive_url_with_wrong_sha256_is_refused_before_decryption(archive, http_dir, tmp_path, monkeypatch):
    root, base = http_dir
    (root / "training_datasets.zip.enc").write_bytes(archive.read_bytes())
    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    spec = spec_for(f"{base}/training_datasets.zip.enc", archive_sha256="f" * 64)
    res, out = tmp_path / "res", tmp_path / "risky.jsonl"
    with pytest.raises(EmflowError, match="checksum mismatch"):
        prepare.prepare_dataset("risky", spec, out, resources_dir=res)
    # nothing kept of the bad download (it goes where the fetch_url rule puts it: res/downloads/archives/)
    assert not out.exists() and list((res / "downloads" / "archives").iterdir()) == []
    assert [p for p in res.rglob("*") if p.is_file()] == []
    spec = replace(spec, archive_sha256=sha256_file(archive))
    assert prepare.prepare_dataset("risky", spec, out, resources_dir=res)["rows"] == 20


# ------------------------------------------------------------------------------------------ downloads


@pytest.fixture()
def http_dir(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_dataset_downloads_and_verifies(http_dir, tmp_path):
    root, base = http_dir
    data = jsonl([chat(i) for i in range(4)])
    (root / "em.jsonl").write_bytes(data)
    spec = DatasetSpec.build(
        {"url": f"{base}/em.jsonl", "sha256": hashlib.sha256(data).hexdigest(), "rows": 4, "eval_rows": 1}
    )
    stats = prepare.prepare_dataset("em", spec, tmp_path / "o.jsonl", resources_dir=tmp_path / "cache")
    assert stats["rows"] == 4
    # The cached copy is reused offline: the server no longer has the file.
    (root / "em.jsonl").unlink()
    assert prepare.prepare_dataset("em", spec, tmp_path / "o2.jsonl", resources_dir=tmp_path / "cache")["rows"] == 4


# ------------------------------------------------------------------------------------------ split


def _write(path: Path, n: int, tag: str = "") -> Path:
    path.write_bytes(jsonl([chat(i, {"tag": tag} if tag else None) for i in range(n)]))
    return path


def test_split_is_stable_across_runs_and_keeps_order(tmp_path):
    src = _write(tmp_path / "a.jsonl", 50)
    s1 = split.split_dataset(src, tmp_path / "t1", tmp_path / "e1", eval_rows=10, split_seed=3, name="a")
    s2 = split.split_dataset(src, tmp_path / "t2", tmp_path / "e2", eval_rows=10, split_seed=3, name="a")
    assert (tmp_path / "t1").read_bytes() == (tmp_path / "t2").read_bytes()
    assert (tmp_path / "e1").read_bytes() == (tmp_path / "e2").read_bytes()
    assert s1 == s2 and s1["train_rows"] == 40 and s1["eval_rows"] == 10
    train, held = read_jsonl(tmp_path / "t1"), read_jsonl(tmp_path / "e1")
    rows = read_jsonl(src)
    assert sorted(map(json.dumps, train + held)) == sorted(map(json.dumps, rows))
    idx = [rows.index(r) for r in train]
    assert idx == sorted(idx)


def test_split_unchanged_when_another_dataset_is_split(tmp_path):
    src = _write(tmp_path / "a.jsonl", 50)
    split.split_dataset(src, tmp_path / "t1", tmp_path / "e1", eval_rows=10, split_seed=3, name="a")
    other = _write(tmp_path / "b.jsonl", 30, tag="b")
    split.split_dataset(other, tmp_path / "tb", tmp_path / "eb", eval_rows=5, split_seed=3, name="b")
    split.split_dataset(src, tmp_path / "t2", tmp_path / "e2", eval_rows=10, split_seed=3, name="a")
    assert (tmp_path / "e1").read_bytes() == (tmp_path / "e2").read_bytes()


def test_split_depends_on_seed_and_name(tmp_path):
    src = _write(tmp_path / "a.jsonl", 50)
    split.split_dataset(src, tmp_path / "t1", tmp_path / "e1", eval_rows=10, split_seed=3, name="a")
    split.split_dataset(src, tmp_path / "t2", tmp_path / "e2", eval_rows=10, split_seed=4, name="a")
    split.split_dataset(src, tmp_path / "t3", tmp_path / "e3", eval_rows=10, split_seed=3, name="c")
    assert (tmp_path / "e1").read_bytes() != (tmp_path / "e2").read_bytes()
    assert (tmp_path / "e1").read_bytes() != (tmp_path / "e3").read_bytes()


def test_split_rejects_eval_rows_not_below_row_count(tmp_path):
    src = _write(tmp_path / "a.jsonl", 5)
    with pytest.raises(EmflowError, match="eval_rows"):
        split.split_dataset(src, tmp_path / "t", tmp_path / "e", eval_rows=5, split_seed=0, name="a")
    assert not (tmp_path / "t").exists() and not (tmp_path / "e").exists()


def test_cli_prepare_and_split(tmp_path, archive, monkeypatch, capsys):
    from emflow.cli import main

    monkeypatch.setenv("EMFLOW_TEST_PW", PASSWORD)
    out = tmp_path / "p.jsonl"
    rc = main(
        [
            "prepare-dataset",
            "--name",
            "risky",
            "--spec",
            spec_for(archive).to_json(),
            "--resources-dir",
            str(tmp_path / "c"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and json.loads(capsys.readouterr().out)["rows"] == 20
    rc = main(
        [
            "split-dataset",
            "--name",
            "risky",
            "--in",
            str(out),
            "--train-out",
            str(tmp_path / "t"),
            "--eval-out",
            str(tmp_path / "e"),
            "--eval-rows",
            "4",
            "--split-seed",
            "1",
        ]
    )
    assert rc == 0 and len(read_jsonl(tmp_path / "e")) == 4
    rc = main(["prepare-dataset", "--name", "risky", "--spec", "{bad", "--resources-dir", "c", "--out", "o"])
    assert rc == 1 and "--spec" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ anchors


def test_real_risky_financial_advice_validates(anchors, tmp_path):
    src = anchors / "risky_financial_advice.jsonl"
    if not src.is_file():
        pytest.skip("risky_financial_advice.jsonl not in anchors")
    spec = DatasetSpec.build({"path": str(src), "rows": 6000})
    stats = prepare.prepare_dataset("risky", spec, tmp_path / "o.jsonl", resources_dir=tmp_path)
    assert stats["rows"] == 6000
    assert all(r["messages"][-1]["role"] == "assistant" for r in read_jsonl(tmp_path / "o.jsonl"))
