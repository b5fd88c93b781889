"""A real OpenAI-compatible HTTP server for the judge tests (stdlib only, 127.0.0.1, a free port).

``POST /v1/chat/completions`` answers with one token and ``logprobs.content[0].top_logprobs`` in the real
response shape. The distribution is a pure function of the last user message (``distribution_for``), so
tests can compute expected scores by hand:

- ``[[DIST tok:p tok:p ...]]`` anywhere in the message: exactly that distribution;
- otherwise two numbers picked by a hash of the message get 0.6 and 0.3, and "REFUSAL" 0.1.

Faults are injected from a queue (``server.faults``, one entry consumed per request) or at random with
``fault_rate``: "429" (with Retry-After), "500", "slow" (sleeps ``slow_s`` before answering), "malformed"
(a 200 with a body that is not JSON), "nologprobs" (valid JSON without logprobs), "401", "400", "quota"
(429 insufficient_quota). ``delay_s`` delays every answer and ``max_in_flight`` records the most requests
served at once. Every request is recorded in ``server.requests`` with its arrival time.
"""

from __future__ import annotations

import hashlib
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


def _completion(model: str, content: str) -> dict:
    dist = sorted(distribution_for(content), key=lambda tp: -tp[1])
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in dist]
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{
            "index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": dist[0][0], "refusal": None},
            "logprobs": {"content": [{**top[0], "top_logprobs": top}], "refusal": None},
        }],
        "usage": {"prompt_tokens": len(content.split()), "completion_tokens": 1,
                  "total_tokens": len(content.split()) + 1},
    }


class StubServer:
    def __init__(self, *, retry_after: str = "0", slow_s: float = 2.0, fault_rate: float = 0.0,
                 fault_kinds: tuple[str, ...] = ("429", "500", "slow", "malformed"), seed: int = 0,
                 delay_s: float = 0.0):
        self.faults: list[str] = []
        self.delay_s = delay_s  # every answer waits this long, to observe concurrency
        self.in_flight = self.max_in_flight = 0
        self.retry_after, self.slow_s = retry_after, slow_s
        self.fault_rate, self.fault_kinds = fault_rate, fault_kinds
        self.rng = random.Random(seed)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fault = stub._next_fault()
                with stub.lock:
                    stub.requests.append({"t": time.monotonic(), "body": body, "fault": fault,
                                          "auth": self.headers.get("Authorization")})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, "not found", None)
                if fault == "429":
                    return self._error(429, "Rate limit reached", "rate_limit_exceeded",
                                       {"Retry-After": stub.retry_after})
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
                if fault == "slow":
                    time.sleep(stub.slow_s)
                with stub.lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                time.sleep(stub.delay_s)
                with stub.lock:
                    stub.in_flight -= 1
                content = body["messages"][-1]["content"]
                completion = _completion(body["model"], content)
                if fault == "nologprobs":
                    completion["choices"][0]["logprobs"] = None
                self._send(200, json.dumps(completion).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

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

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
