"""Models and adapters: hub specs, fetch verification and manifest, the offline hint at the stages that load them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from emflow.errors import EmflowError
from emflow.fetch import hub as assets
from emflow.fetch.asset import Asset

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OFFLINE_HINT = "run the fetch target on a machine with internet"

MODEL_FILES = {
    "config.json": b'{"model_type": "qwen2"}',
    "model.safetensors": b"w" * 64,
    "tokenizer_config.json": b"{}",
    "original/consolidated.00.pth": b"big" * 10,  # Llama's duplicate checkpoint: never fetched
}
PERSONA_FILES = {
    "README.md": b"# personas\n",
    "goodness/adapter_config.json": b'{"r": 4}',
    "goodness/adapter_model.safetensors": b"a" * 32,
    "sycophancy/adapter_config.json": b'{"r": 4}',
    "sycophancy/adapter_model.safetensors": b"b" * 32,
}


class FakeHub:
    """Resolves every revision to COMMIT and writes ``files`` (minus ignored folders), as the hub client would."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.calls: list[tuple] = []

    def resolve(self, repo: str, revision: str) -> str:
        self.calls.append(("resolve", repo, revision))
        return COMMIT

    def download(self, repo: str, commit: str, local_dir: Path, ignore: list[str]) -> None:
        self.calls.append(("download", repo, commit))
        for name, data in self.files.items():
            if any(Path(name).match(p) for p in ignore):
                continue
            (local_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (local_dir / name).write_bytes(data)


@pytest.fixture()
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_hub_spec_parts_and_paths():
    a = Asset("hf:maius/qwen-2.5-7b-it-personas@abc123/goodness", "res")
    assert (a.repo, a.revision, a.subfolder) == ("maius/qwen-2.5-7b-it-personas", "abc123", "goodness")
    assert a.snapshot_dir == "res/hf/maius/qwen-2.5-7b-it-personas/abc123"
    assert a.path == "res/hf/maius/qwen-2.5-7b-it-personas/abc123/goodness"
    flat = Asset("hf:maius/qwen-2.5-7b-it-misalignment@main", "res")
    assert flat.subfolder is None and flat.path == flat.snapshot_dir
    local = Asset("/models/llama", "res")
    assert not local.is_hub and local.path == "/models/llama" and local.subfolder is None


def test_fetch_resolves_the_revision_downloads_that_commit_and_writes_manifest(tmp_path, online):
    hub = FakeHub(MODEL_FILES)
    out = tmp_path / "hf" / "Qwen" / "Qwen2.5-7B-Instruct" / "main"
    manifest = assets.fetch_hf("Qwen/Qwen2.5-7B-Instruct", "main", out, hub=hub)
    assert hub.calls == [
        ("resolve", "Qwen/Qwen2.5-7B-Instruct", "main"),
        ("download", "Qwen/Qwen2.5-7B-Instruct", COMMIT),
    ]
    assert manifest["commit"] == COMMIT and manifest["revision"] == "main" and manifest["models"] == ["."]
    assert json.loads((out / assets.MANIFEST).read_text()) == manifest
    assert manifest["files"]["model.safetensors"] == 64
    assert not (out / "original").exists()
    assert assets.read_manifest(out)["repo"] == "Qwen/Qwen2.5-7B-Instruct"


def test_unpinned_revision_logs_the_commit_to_pin(tmp_path, online, caplog):
    assets.fetch_hf("o/m", "main", tmp_path / "m", hub=FakeHub(MODEL_FILES))
    assert f"use @{COMMIT}" in caplog.text
    caplog.clear()
    assets.fetch_hf("o/m", COMMIT, tmp_path / "p", hub=FakeHub(MODEL_FILES))
    assert "not pinned" not in caplog.text


def test_personas_repo_checks_required_subfolders(tmp_path, online):
    manifest = assets.fetch_hf(
        "maius/p", "main", tmp_path / "ok", require=["goodness", "sycophancy"], hub=FakeHub(PERSONA_FILES)
    )
    assert manifest["adapters"] == ["goodness", "sycophancy"] and manifest["models"] == []
    out = tmp_path / "bad"
    with pytest.raises(EmflowError, match="misalignment: no model or adapter in this subfolder") as err:
        assets.fetch_hf("maius/p", "main", out, require=["misalignment"], hub=FakeHub(PERSONA_FILES))
    assert "goodness, sycophancy" in str(err.value)
    assert not out.exists() and list(tmp_path.glob(".bad*")) == []


@pytest.mark.parametrize(
    "drop, needle",
    [
        ("model.safetensors", "model config.json without weights"),
        ("tokenizer_config.json", "model config.json without tokenizer"),
        ("config.json", "neither a model nor an adapter"),
    ],
)
def test_incomplete_model_snapshot_is_rejected_and_nothing_written(tmp_path, online, drop, needle):
    files = {k: v for k, v in MODEL_FILES.items() if k != drop}
    out = tmp_path / "snap"
    with pytest.raises(EmflowError, match=needle):
        assets.fetch_hf("o/m", COMMIT, out, hub=FakeHub(files))
    assert not out.exists()


def test_adapter_without_weights_is_rejected(tmp_path):
    (tmp_path / "goodness").mkdir()
    (tmp_path / "goodness" / "adapter_config.json").write_text("{}")
    with pytest.raises(EmflowError, match="goodness: adapter_config.json without adapter weights"):
        assets.verify_snapshot(tmp_path)


def test_fetch_refuses_with_hub_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmflowError, match=OFFLINE_HINT):
        assets.fetch_hf("o/m", "main", tmp_path / "m", hub=FakeHub(MODEL_FILES))


def test_unfetched_snapshot_manifest_gives_fetch_hint(tmp_path):
    with pytest.raises(EmflowError, match=OFFLINE_HINT):
        assets.read_manifest(tmp_path / "never-fetched")


# --------------------------------------------------------------------------------------------- real client


def _stub_hub(files: dict[str, bytes], repo: str):
    """A local HTTP server answering the hub API calls huggingface_hub's snapshot_download makes."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes, headers: dict, head: bool) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            as_json = {"Content-Type": "application/json"}
            if path == f"/api/models/{repo}/revision/main" or path == f"/api/models/{repo}/revision/{COMMIT}":
                info = {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                return self._send(200, json.dumps(info).encode(), as_json, head)
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._send(
                    404, b'{"error": "Invalid rev id"}', {**as_json, "X-Error-Code": "RevisionNotFound"}, head
                )
            if path.startswith(f"/api/models/{repo}/tree/{COMMIT}"):
                tree = [
                    {"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for f, d in files.items()
                ]
                return self._send(200, json.dumps(tree).encode(), as_json, head)
            prefix = f"/{repo}/resolve/{COMMIT}/"
            if path.startswith(prefix) and path[len(prefix) :] in files:
                data = files[path[len(prefix) :]]
                etag = f'"{hashlib.sha1(data).hexdigest()}"'
                return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": etag}, head)
            return self._send(404, b'{"error": "not found"}', {**as_json, "X-Error-Code": "EntryNotFound"}, head)

        def do_GET(self):
            self._answer(head=False)

        def do_HEAD(self):
            self._answer(head=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def hub_endpoint():
    server = _stub_hub(PERSONA_FILES | {"original/x.pth": b"x"}, "maius/personas")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _fetch_cli(endpoint: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # A subprocess: huggingface_hub reads HF_HUB_OFFLINE/HF_ENDPOINT at import, and this session is offline.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(ROOT / "workflow"),
    }
    return subprocess.run(
        [sys.executable, "-m", "emflow", "fetch-hf", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_fetch_hf_cli_downloads_through_huggingface_hub(hub_endpoint, tmp_path):
    out = tmp_path / "hf" / "maius" / "personas" / "main"
    proc = _fetch_cli(
        hub_endpoint,
        tmp_path,
        "--repo",
        "maius/personas",
        "--revision",
        "main",
        "--require",
        "goodness",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "goodness" / "adapter_model.safetensors").read_bytes() == b"a" * 32
    assert not (out / "original").exists() and not (out / ".cache").exists()
    manifest = assets.read_manifest(out)
    assert manifest["commit"] == COMMIT and manifest["adapters"] == ["goodness", "sycophancy"]
    assert set(manifest["files"]) == set(PERSONA_FILES)


def test_fetch_hf_cli_unknown_revision_is_one_line_error(hub_endpoint, tmp_path):
    out = tmp_path / "snap"
    proc = _fetch_cli(hub_endpoint, tmp_path, "--repo", "maius/personas", "--revision", "v9", "--out", str(out))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "maius/personas@v9: revision: no such revision on the hub" in last and "Traceback" not in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------- offline stages


def test_load_base_on_missing_model_gives_fetch_hint(tmp_path):
    from emflow import models

    with pytest.raises(EmflowError, match=OFFLINE_HINT) as err:
        models.load_base(tmp_path / "hf" / "meta-llama" / "Llama-3.2-1B-Instruct" / COMMIT)
    assert "\n" not in str(err.value)


def test_train_on_missing_base_names_it_and_says_fetch(tmp_path):
    from emflow.config.sections.training import Training
    from emflow.train import run as train

    rows = tmp_path / "train.jsonl"
    rows.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    )
    training = Training.build(yaml.safe_load((ROOT / "config.yaml").read_text())["training"])
    missing = tmp_path / "not-fetched"
    with pytest.raises(EmflowError) as err:
        train.train_em_lora(
            base=missing,
            persona=None,
            train_path=rows,
            eval_path=None,
            out_dir=tmp_path / "run",
            training=training,
            steps=[1],
            seed=0,
        )
    msg = str(err.value)
    assert str(missing) in msg and "fetch" in msg and "\n" not in msg
    assert not (tmp_path / "run").exists()
