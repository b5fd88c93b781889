"""The judge's Batch-API mode against the stub server's files and batches endpoints, through the real client."""

from __future__ import annotations

import json

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.sections.judge import Judge
from emflow.errors import EmflowError
from emflow.io import read_jsonl
from emflow.judge import batch as judge_batch
from emflow.judge import score as judge
from emflow.judge.backends.openai import OpenAIBackend
from support.judge_case import (
    HAND_SCORE,
    KEY,
    N_REQUESTS,
    REFUSING,
    judge_content,
    openai_judge,
)
from support.paths import ROOT
from support.stub_server import StubServer, expected_score

pytestmark = pytest.mark.usefixtures("api_key")


@pytest.fixture()
def server():
    with StubServer() as s:
        s.batch_polls = 1
        yield s


class Sleeps:
    """Records waits instead of sleeping; ``on`` acts at the n-th batch poll wait (e.g. to simulate a kill)."""

    def __init__(self, poll_s: float = 7.5, on=None):
        self.poll_s, self.on = poll_s, on
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.on and seconds == self.poll_s:
            self.on(self.polls)

    @property
    def polls(self) -> int:
        return self.waits.count(self.poll_s)


def batch_params(server, cache, **overrides) -> Judge:
    return openai_judge(
        server, cache, **{"mode": "batch", "batch_poll_s": 7.5, "batch_max_requests": 50_000, **overrides}
    )


def run_batch(files, section: Judge, sleep=None) -> dict:
    backend = OpenAIBackend(section, sleep=sleep or Sleeps())
    return judge.judge_generations(
        generations_path=files["generations"],
        questions_path=files["questions"],
        out_path=files["out"],
        judge=section,
        backend=backend,
    )


def uploads(server) -> list[tuple[str, str]]:
    return [c for c in server.api_calls if c == ("POST", "/v1/files")]


def uploaded_lines(server) -> list[dict]:
    return [
        json.loads(x)
        for f in server.files.values()
        if f["purpose"] == "batch"
        for x in f["content"].decode().splitlines()
    ]


def test_batch_scores_equal_online_scores_exactly(server, files, tmp_path):
    stats = run_batch(files, batch_params(server, files["cache"]))
    batch_out = files["out"].read_bytes()
    assert stats["called"] == N_REQUESTS and len(server.batches) == 1
    assert all(r["auth"] == "batch" for r in server.requests)  # no online chat completion was made
    online = {**files, "out": tmp_path / "online.jsonl"}
    judge.judge_generations(
        generations_path=files["generations"],
        questions_path=files["questions"],
        out_path=online["out"],
        judge=openai_judge(server, tmp_path / "online_cache"),
    )
    assert online["out"].read_bytes() == batch_out
    rows = read_jsonl(files["out"])
    assert rows[0]["aligned"] == pytest.approx(HAND_SCORE) and rows[1]["aligned"] is None
    for row in rows[2:]:
        assert row["coherent"] == pytest.approx(
            expected_score(judge_content("coherent", row["question"], row["answer"]))
        )
    assert not judge_batch.state_path(files["out"]).exists()


def test_requests_file_maps_back_by_custom_id_as_the_cache_key(server, files):
    from emflow.judge.cache import cache_key

    run_batch(files, batch_params(server, files["cache"]))
    lines = uploaded_lines(server)
    assert len(lines) == N_REQUESTS
    for line in lines:
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert line["custom_id"] == cache_key(line["body"], server.base_url)
        assert line["body"]["max_tokens"] == 1 and line["body"]["logprobs"] is True
    assert KEY not in json.dumps(lines)


def test_polls_at_the_configured_interval(server, files):
    server.batch_polls = 3
    sleeps = Sleeps()
    run_batch(files, batch_params(server, files["cache"]), sleep=sleeps)
    assert sleeps.waits == [7.5] * 3  # no retries here, so every wait is a poll
    assert server.api_calls.count(("GET", f"/v1/batches/{next(iter(server.batches))}")) == 4


def test_batch_fills_the_shared_cache_so_reruns_make_zero_calls(server, files, tmp_path):
    run_batch(files, batch_params(server, files["cache"]))
    server.api_calls.clear()
    server.requests.clear()
    again = run_batch({**files, "out": tmp_path / "again.jsonl"}, batch_params(server, files["cache"]))
    assert again["called"] == 0 and server.api_calls == []
    online = judge.judge_generations(
        generations_path=files["generations"],
        questions_path=files["questions"],
        out_path=tmp_path / "online.jsonl",
        judge=openai_judge(server, files["cache"]),
    )
    assert online["called"] == 0 and server.requests == []


def test_killed_while_waiting_resumes_the_same_batch(server, files):
    server.batch_polls = 5

    def kill(n):
        if n == 2:
            raise KeyboardInterrupt  # the judge job is killed mid-wait

    with pytest.raises(KeyboardInterrupt):
        run_batch(files, batch_params(server, files["cache"]), sleep=Sleeps(on=kill))
    state = judge_batch.state_path(files["out"])
    assert json.loads(state.read_text())["batches"] == list(server.batches)
    assert not files["out"].exists()
    stats = run_batch(files, batch_params(server, files["cache"]))
    assert len(uploads(server)) == 1 and len(server.batches) == 1  # nothing submitted (or paid for) twice
    assert stats["rows"] == 6 and len(read_jsonl(files["out"])) == 6
    assert not state.exists()


def test_failed_and_logprob_less_lines_are_resubmitted_without_losing_rows(server, files):
    server.batch_line_faults = ["500", "ok", "nologprobs"]
    stats = run_batch(files, batch_params(server, files["cache"]))
    assert len(server.batches) == 2
    second = [
        json.loads(x)
        for x in server.files[list(server.batches.values())[1]["input_file_id"]]["content"].decode().splitlines()
    ]
    assert len(second) == 2
    out = read_jsonl(files["out"])
    assert len(out) == 6 and stats["called"] == N_REQUESTS
    assert all(r["coherent"] is not None for r in out if r["answer"] != REFUSING)


def test_expired_batch_keeps_its_partial_answers_and_resubmits_the_rest(server, files):
    server.batch_final_status, server.batch_process_limit = "expired", 6
    run_batch(files, batch_params(server, files["cache"], max_retries=3))
    sizes = [server.batches[b]["request_counts"]["total"] for b in server.batches]
    assert sizes == [N_REQUESTS, N_REQUESTS - 6, N_REQUESTS - 12]
    assert len(read_jsonl(files["out"])) == 6


def test_large_sets_are_split_into_several_batches(server, files):
    run_batch(files, batch_params(server, files["cache"], batch_max_requests=5))
    assert [b["request_counts"]["total"] for b in server.batches.values()] == [5, 5, 4]
    assert len(read_jsonl(files["out"])) == 6


def test_transient_api_errors_on_upload_and_polling_are_retried(server, files):
    server.api_faults = ["429", "500", "ok", "500", "429"]
    run_batch(files, batch_params(server, files["cache"]))
    assert len(read_jsonl(files["out"])) == 6 and len(server.batches) == 1


def test_gives_up_after_max_retries_rounds_and_writes_nothing(server, files):
    server.batch_line_faults = ["500"] * 100
    with pytest.raises(EmflowError, match="still unanswered after 3 batches"):
        run_batch(files, batch_params(server, files["cache"], max_retries=2))
    assert len(server.batches) == 3 and not files["out"].exists()
    assert not judge_batch.state_path(files["out"]).exists()


def test_failed_batch_is_an_error_and_is_not_resumed(server, files):
    server.batch_final_status = "failed"
    with pytest.raises(EmflowError, match="failed"):
        run_batch(files, batch_params(server, files["cache"]))
    assert not files["out"].exists() and not judge_batch.state_path(files["out"]).exists()


def test_batch_unknown_to_the_server_is_resubmitted(server, files):
    judge_batch.save_state(judge_batch.state_path(files["out"]), ["batch-from-elsewhere"])
    run_batch(files, batch_params(server, files["cache"]))
    assert len(server.batches) == 1 and len(read_jsonl(files["out"])) == 6


def test_batch_mode_needs_the_openai_backend():
    # The schema refuses it at parse time: the Batch API is OpenAI's, a local hf judge runs online.
    config = load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])  # an hf judge
    config["judge"]["mode"] = "batch"
    with pytest.raises(EmflowError, match=r"judge\.mode: 'online' was expected"):
        load_experiment(config)


def test_unknown_mode_is_rejected():
    config = load_config_files([ROOT / "config.yaml"])
    config["judge"]["mode"] = "bulk"
    with pytest.raises(EmflowError, match=r"judge\.mode: 'bulk' is not one of \['online', 'batch'\]"):
        load_experiment(config)
