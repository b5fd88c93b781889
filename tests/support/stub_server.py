"""A real OpenAI-compatible HTTP server for the judge tests (stdlib only, 127.0.0.1, a free port).

``POST /v1/chat/completions`` answers with one token and ``logprobs.content[0].top_logprobs`` in the real
response shape. The distribution is a pure function of the last user message (``distribution_for``), so
tests can compute expected scores by hand:

- ``[[DIST tok:p tok:p ...]]`` anywhere in the message: exactly that distribution;
- otherwise two numbers picked by a hash of the message get 0.6 and 0.3, and "REFUSAL" 0.1.

Faults are injected from a queue (``server.faults``, one entry consumed per request) or at random with
``fault_rate``: "429" (with Retry-After), "500", "slow" (sleeps ``slow_s`` before answering), "malformed"
(a 200 with a body that is not JSON), "html" (a 200 text/html page), "nologprobs" (valid JSON without
logprobs), "401", "400", "quota"
(429 insufficient_quota). ``delay_s`` delays every answer and ``max_in_flight`` records the most requests
served at once. Every request is recorded in ``server.requests`` with its arrival time.

Batch API: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches`` and
``GET /v1/batches/{id}``. A batch stays ``in_progress`` for ``batch_polls`` retrieves, then runs every line
through the same ``_completion`` and is ``completed`` (or ``batch_final_status``, processing only the first
``batch_process_limit`` lines). ``batch_line_faults`` (consumed per line) makes a line fail in the error file
("500") or answer without logprobs ("nologprobs"); ``api_faults`` (consumed per files/batches call) answers
"429" or "500". Those calls are recorded in ``server.api_calls`` as (method, path).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import itertools
import json
import math
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIST_RE = re.compile(r"\[\[DIST ([^\]]*)\]\]")


def distribution_for(content: str) -> list[tuple[str, float]]:
    m = DIST_RE.search(content)
    if m:
        pairs = [item.rsplit(":", 1) for item in m.group(1).split()]
        return [(tok, float(p)) for tok, p in pairs]
    h = hashlib.sha256(content.encode()).digest()
    a, b = h[0] % 101, h[1] % 101
    if a == b:
        b = (a + 1) % 101
    return [(str(a), 0.6), (str(b), 0.3), ("REFUSAL", 0.1)]


def expected_score(content: str) -> float | None:
    """Σ k·p / Σ p over numeric tokens of ``distribution_for`` (no mass threshold)."""
    nums = [(int(t), p) for t, p in distribution_for(content) if t.strip().isdigit() and 0 <= int(t) <= 100]
    mass = sum(p for _, p in nums)
    return sum(k * p for k, p in nums) / mass if mass else None


def _completion(model: str, content: str, scorer=None) -> dict:
    dist = sorted((scorer or distribution_for)(content), key=lambda tp: -tp[1])
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in dist]
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": dist[0][0], "refusal": None},
                "logprobs": {"content": [{**top[0], "top_logprobs": top}], "refusal": None},
            }
        ],
        "usage": {
            "prompt_tokens": len(content.split()),
            "completion_tokens": 1,
            "total_tokens": len(content.split()) + 1,
        },
    }


class StubServer:
    def __init__(
        self,
        *,
        retry_after: str = "0",
        slow_s: float = 2.0,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = ("429", "500", "slow", "malformed"),
        seed: int = 0,
        delay_s: float = 0.0,
    ):
        self.faults: list[str] = []
        # A function of the last user message -> [(token, p), ...] replacing ``distribution_for`` (a judge
        # with an opinion, e.g. for calibration tests).
        self.scorer = None
        self.delay_s = delay_s  # every answer waits this long, to observe concurrency
        self.in_flight = self.max_in_flight = 0
        self.retry_after, self.slow_s = retry_after, slow_s
        self.fault_rate, self.fault_kinds = fault_rate, fault_kinds
        self.rng = random.Random(seed)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.api_calls: list[tuple[str, str]] = []
        self.api_faults: list[str] = []
        self.batch_polls = 1
        self.batch_final_status = "completed"
        self.batch_process_limit: int | None = None
        self.batch_line_faults: list[str] = []
        self._ids = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _error(self, status: int, message: str, code: str | None, headers: dict | None = None):
                err = {"error": {"message": message, "type": code or "error", "param": None, "code": code}}
                self._send(status, json.dumps(err).encode(), headers)

            def _api(self, method: str) -> bool:
                """Files and batches endpoints; False when the path is not one of them."""
                path = self.path.rstrip("/")
                if not path.startswith(("/v1/files", "/v1/batches")):
                    return False
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))) if method == "POST" else b""
                with stub.lock:
                    stub.api_calls.append((method, path))
                    fault = stub.api_faults.pop(0) if stub.api_faults else None
                if fault == "429":
                    self._error(429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": stub.retry_after})
                elif fault == "500":
                    self._error(500, "The server had an error", None)
                else:
                    status, reply = stub._batch_api(method, path, raw, self.headers.get("Content-Type", ""))
                    if isinstance(reply, bytes):
                        self._send(status, reply)
                    else:
                        self._send(status, json.dumps(reply).encode())
                return True

            def do_GET(self):
                if not self._api("GET"):
                    self._error(404, "not found", None)

            def do_POST(self):
                if self._api("POST"):
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fault = stub._next_fault()
                with stub.lock:
                    stub.requests.append(
                        {"t": time.monotonic(), "body": body, "fault": fault, "auth": self.headers.get("Authorization")}
                    )
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, "not found", None)
                if fault == "429":
                    return self._error(
                        429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": stub.retry_after}
                    )
                if fault == "quota":
                    return self._error(429, "You exceeded your current quota", "insufficient_quota")
                if fault == "500":
                    return self._error(500, "The server had an error", None)
                if fault == "401":
                    return self._error(401, "Incorrect API key provided", "invalid_api_key")
                if fault == "400":
                    return self._error(400, "Invalid request", "invalid_request_error")
                if fault == "malformed":
                    return self._send(200, b'{"id": "chatcmpl-stub", "choices": [{"index": 0, "mess')
                if fault == "html":  # a proxy's or a web server's page where the API was expected
                    page = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if fault == "slow":
                    time.sleep(stub.slow_s)
                with stub.lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                time.sleep(stub.delay_s)
                with stub.lock:
                    stub.in_flight -= 1
                content = body["messages"][-1]["content"]
                completion = _completion(body["model"], content, stub.scorer)
                if fault == "nologprobs":
                    completion["choices"][0]["logprobs"] = None
                self._send(200, json.dumps(completion).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------------------------------ batch API

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-stub{next(self._ids)}"

    def _file(self, name: str, content: bytes, purpose: str) -> dict:
        fid = self._new_id("file")
        self.files[fid] = {
            "id": fid,
            "object": "file",
            "bytes": len(content),
            "created_at": 0,
            "filename": name,
            "purpose": purpose,
            "status": "processed",
            "content": content,
        }
        return {k: v for k, v in self.files[fid].items() if k != "content"}

    def _batch_api(self, method: str, path: str, raw: bytes, content_type: str) -> tuple[int, dict | bytes]:
        parts = path.split("/")[2:]  # ["files"|"batches", id?, "content"?]
        with self.lock:
            if method == "POST" and parts == ["files"]:
                msg = email.message_from_bytes(
                    f"Content-Type: {content_type}\r\n\r\n".encode() + raw, policy=email.policy.HTTP
                )
                fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
                upload = fields["file"]
                return 200, self._file(
                    upload.get_filename(),
                    upload.get_payload(decode=True),
                    fields["purpose"].get_payload(decode=True).decode(),
                )
            if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                f = self.files.get(parts[1])
                return (200, f["content"]) if f else (404, {"error": {"message": "no such file", "code": None}})
            if method == "POST" and parts == ["batches"]:
                body = json.loads(raw)
                if body["input_file_id"] not in self.files or body["endpoint"] != "/v1/chat/completions":
                    return 400, {"error": {"message": "bad batch", "type": "invalid_request_error", "code": None}}
                bid = self._new_id("batch")
                self.batches[bid] = {
                    "id": bid,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "errors": None,
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "validating",
                    "output_file_id": None,
                    "error_file_id": None,
                    "created_at": 0,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "metadata": body.get("metadata"),
                    "_polls": 0,
                }
                return 200, self._public(self.batches[bid])
            if method == "GET" and len(parts) == 2 and parts[0] == "batches":
                batch = self.batches.get(parts[1])
                if batch is None:
                    return 404, {"error": {"message": "No batch found", "type": "invalid_request_error", "code": None}}
                if batch["status"] in ("validating", "in_progress"):
                    batch["_polls"] += 1
                    batch["status"] = "in_progress"
                    if batch["_polls"] > self.batch_polls:
                        self._run_batch(batch)
                return 200, self._public(batch)
        return 404, {"error": {"message": "not found", "code": None}}

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _run_batch(self, batch: dict) -> None:
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]]["content"].decode().splitlines() if x]
        done = lines if self.batch_process_limit is None else lines[: self.batch_process_limit]
        ok, failed = [], []
        for line in done:
            fault = self.batch_line_faults.pop(0) if self.batch_line_faults else None
            body = line["body"]
            self.requests.append({"t": time.monotonic(), "body": body, "fault": fault, "auth": "batch"})
            rid = self._new_id("batch_req")
            if fault == "500":
                failed.append(
                    {
                        "id": rid,
                        "custom_id": line["custom_id"],
                        "response": {
                            "status_code": 500,
                            "request_id": rid,
                            "body": {"error": {"message": "The server had an error", "type": "server_error"}},
                        },
                        "error": None,
                    }
                )
                continue
            completion = _completion(body["model"], body["messages"][-1]["content"], self.scorer)
            if fault == "nologprobs":
                completion["choices"][0]["logprobs"] = None
            ok.append(
                {
                    "id": rid,
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "request_id": rid, "body": completion},
                    "error": None,
                }
            )
        # Like the real service, output lines are not in input order.
        ok.reverse()
        if ok:
            batch["output_file_id"] = self._file(
                "output.jsonl", "".join(json.dumps(x) + "\n" for x in ok).encode(), "batch_output"
            )["id"]
        if failed:
            batch["error_file_id"] = self._file(
                "errors.jsonl", "".join(json.dumps(x) + "\n" for x in failed).encode(), "batch_output"
            )["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(ok), "failed": len(failed)}
        batch["status"] = self.batch_final_status

    def _next_fault(self) -> str | None:
        with self.lock:
            if self.faults:
                f = self.faults.pop(0)
                return None if f == "ok" else f
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.fault_kinds)
        return None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def ok_requests(self) -> list[dict]:
        return [r for r in self.requests if r["fault"] in (None, "slow")]

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
