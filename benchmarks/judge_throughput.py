"""Judge throughput against the test suite's OpenAI-compatible stub server with a fixed latency per request.

For each concurrency, ``emflow.judge.online.fetch_replies`` (the real path: openai client, retry policy, cache write per
reply) judges --requests distinct requests into an empty cache; achieved requests/s is printed beside the
bound concurrency / latency and beside one-at-a-time calls (a plain loop of ``backend.call``).

    python benchmarks/judge_throughput.py --latency 0.05 --requests 200 --concurrency 1 4 16 64
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "tests"))

KEY_ENV = "EMFLOW_BENCH_JUDGE_KEY"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each answer")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    a = ap.parse_args()

    import logging

    logging.disable(logging.INFO)
    os.environ.setdefault(KEY_ENV, "sk-bench")
    from emflow.config.sections.judge import Judge
    from emflow.judge.backends import make_backend
    from emflow.judge.cache import JudgeCache, cache_key
    from emflow.judge.online import fetch_replies
    from support.stub_server import StubServer

    def params(server, cache, concurrency) -> Judge:
        return Judge.build(
            {
                "backend": "openai",
                "model": "gpt-stub",
                "base_url": server.base_url,
                "api_key_env": KEY_ENV,
                "top_logprobs": 20,
                "min_numeric_mass": 0.25,
                "concurrency": concurrency,
                "max_retries": 3,
                "timeout_s": 30,
                "cache_dir": str(cache),
                "backoff_base_s": 0.1,
                "backoff_max_s": 1,
            }
        )

    rows = []
    with StubServer(delay_s=a.latency) as server, tempfile.TemporaryDirectory() as tmp:

        def requests_for(tag: str, backend) -> dict:
            reqs = [
                backend.request([{"role": "user", "content": f"{tag} answer {i}: rate it 0-100"}])
                for i in range(a.requests)
            ]
            return {cache_key(r): r for r in reqs}

        backend = make_backend(params(server, Path(tmp) / "seq", 1))
        reqs = requests_for("sequential", backend)
        t0 = time.perf_counter()
        for r in reqs.values():
            backend.call(r)
        seq = a.requests / (time.perf_counter() - t0)
        rows.append(("one at a time", 1, seq, 1 / a.latency))
        for c in a.concurrency:
            cache_dir = Path(tmp) / f"c{c}"
            backend = make_backend(params(server, cache_dir, c))
            reqs = requests_for(f"c{c}", backend)
            server.max_in_flight = 0
            t0 = time.perf_counter()
            replies, _ = fetch_replies(reqs, backend, JudgeCache(cache_dir))
            rate = len(replies) / (time.perf_counter() - t0)
            rows.append((f"fetch_replies (in flight {server.max_in_flight})", c, rate, c / a.latency))
    print(
        f"\njudge throughput: stub server latency {a.latency * 1000:.0f} ms, {a.requests} requests per row, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'how':<30} {'concurrency':>11} {'req/s':>9} {'bound c/latency':>16} {'of bound':>9} {'x one-at-a-time':>16}"
    )
    for how, c, rate, bound in rows:
        print(f"{how:<30} {c:>11} {rate:>9.1f} {bound:>16.1f} {rate / bound:>9.0%} {rate / seq:>16.2f}")


if __name__ == "__main__":
    main()
