"""The LLM judge: scores from logprobs, the retry policy against a real HTTP server, the cache, the hf judge."""

from __future__ import annotations

import json
import logging
import math

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.sections.judge import Judge
from emflow.errors import EmflowError
from emflow.io import read_jsonl, write_jsonl
from emflow.judge import cli as judge_cli
from emflow.judge import score as judge
from emflow.judge.backends import make_backend
from emflow.judge.cache import JudgeCache, cache_key
from support.judge_case import (
    HAND,
    HAND_SCORE,
    KEY,
    KEY_ENV,
    N_REQUESTS,
    REFUSING,
    judge_content,
    openai_judge,
    openai_params,
)
from support.paths import ROOT
from support.stub_server import StubServer, expected_score

pytestmark = pytest.mark.usefixtures("api_key")


@pytest.fixture()
def server():
    with StubServer(slow_s=1.0) as s:
        yield s


def run(files, judge_section: Judge, backend=None) -> dict:
    return judge.judge_generations(
        generations_path=files["generations"],
        questions_path=files["questions"],
        out_path=files["out"],
        judge=judge_section,
        backend=backend,
    )


# ---------------------------------------------------------------------------------------------- scoring


def test_score_is_probability_weighted_mean_of_numeric_tokens(server, files):
    run(files, openai_judge(server, files["cache"]))
    row = read_jsonl(files["out"])[0]
    assert row["answer"] == HAND
    assert row["aligned"] == pytest.approx(HAND_SCORE)
    assert row["coherent"] == pytest.approx(HAND_SCORE)
    assert row["judge"]["aligned"]["numeric_mass"] == pytest.approx(0.75)
    assert row["judge"]["aligned"]["top"] == [
        ["30", pytest.approx(0.5)],
        ["70", pytest.approx(0.25)],
        ["CODE", pytest.approx(0.25)],
    ]
    assert row["judge_model"] == "gpt-stub"


def test_score_is_null_below_min_numeric_mass_and_refusal_stays_visible(server, files):
    run(files, openai_judge(server, files["cache"]))
    row = read_jsonl(files["out"])[1]
    assert row["aligned"] is None and row["coherent"] is None
    assert row["judge"]["aligned"]["numeric_mass"] == pytest.approx(0.2)
    assert row["judge"]["aligned"]["top"][0] == ["REFUSAL", pytest.approx(0.8)]


def test_min_numeric_mass_is_a_parameter(server, files):
    run(files, openai_judge(server, files["cache"], min_numeric_mass=0.1))
    assert read_jsonl(files["out"])[1]["aligned"] == pytest.approx(50.0)


def test_every_row_scored_on_its_questions_metrics_in_input_order(server, files):
    stats = run(files, openai_judge(server, files["cache"]))
    gens, out = read_jsonl(files["generations"]), read_jsonl(files["out"])
    assert [(r["question_id"], r["paraphrase_index"], r["sample_index"]) for r in out] == [
        (r["question_id"], r["paraphrase_index"], r["sample_index"]) for r in gens
    ]
    for row in out[2:]:
        metrics = ["aligned", "coherent"] + (["financial"] if row["question_id"] == "money" else [])
        assert set(row["judge"]) == set(metrics)
        for m in metrics:
            assert row[m] == pytest.approx(expected_score(judge_content(m, row["question"], row["answer"])))
    assert stats["rows"] == 6 and stats["called"] == N_REQUESTS and stats["null_scores"]["aligned"] == 1
    sent = server.requests[0]["body"]
    assert sent["max_tokens"] == 1 and sent["temperature"] == 0 and sent["logprobs"] is True
    assert sent["top_logprobs"] == 20 and len(sent["messages"]) == 1 and sent["messages"][0]["role"] == "user"
    assert server.requests[0]["auth"] == f"Bearer {KEY}"


def test_score_reply_sums_duplicate_number_tokens():
    reply = [["85", math.log(0.3)], [" 85", math.log(0.3)], ["40", math.log(0.2)], ["101", math.log(0.2)]]
    verdict = judge.score_reply(reply, min_numeric_mass=0.25, keep_top=2)
    assert verdict["score"] == pytest.approx((85 * 0.6 + 40 * 0.2) / 0.8)
    assert verdict["numeric_mass"] == pytest.approx(0.8)
    assert len(verdict["top"]) == 2


# ---------------------------------------------------------------------------------------------- faults


def test_no_rows_lost_under_injected_faults(server, files):
    server.faults = ["429", "500", "malformed", "slow", "nologprobs", "500", "429", "malformed"]
    stats = run(files, openai_judge(server, files["cache"], timeout_s=0.3, max_retries=10))
    out = read_jsonl(files["out"])
    assert len(out) == 6 and stats["called"] == N_REQUESTS
    for row in out[2:]:
        assert row["aligned"] == pytest.approx(expected_score(judge_content("aligned", row["question"], row["answer"])))
    assert len(server.requests) == N_REQUESTS + 8


def test_random_faults_are_all_retried(server, files):
    server.fault_rate, server.fault_kinds = 0.4, ("429", "500", "malformed", "nologprobs")
    run(files, openai_judge(server, files["cache"], max_retries=20))
    out = read_jsonl(files["out"])
    assert all(r["coherent"] is not None for r in out if r["answer"] != REFUSING)
    assert sum(r["fault"] is not None for r in server.requests) > 0


def test_retry_after_is_honoured(server, files):
    server.retry_after = "1"
    server.faults = ["429"]
    run(files, openai_judge(server, files["cache"], concurrency=1))
    first, second = server.requests[0], server.requests[1]
    assert first["fault"] == "429" and second["body"] == first["body"]
    assert second["t"] - first["t"] >= 0.95


@pytest.mark.parametrize("fault", ["401", "quota", "400"])
def test_no_retry_on_rejections_and_no_output(server, files, fault):
    server.faults = [fault]
    with pytest.raises(EmflowError, match="rejected"):
        run(files, openai_judge(server, files["cache"], concurrency=1))
    assert len(server.requests) == 1
    assert not files["out"].exists()


def test_gives_up_after_max_retries_and_writes_nothing(server, files):
    server.faults = ["500"] * 3
    with pytest.raises(EmflowError, match="gave up after 3 attempts"):
        run(files, openai_judge(server, files["cache"], concurrency=1, max_retries=2))
    assert len(server.requests) == 3 and not files["out"].exists()


# ---------------------------------------------------------------------------------------------- cache


def test_killed_midway_resumes_without_repeating_calls(server, files):
    server.faults = ["ok"] * 5 + ["401"]
    with pytest.raises(EmflowError):
        run(files, openai_judge(server, files["cache"], concurrency=1))
    assert not files["out"].exists()
    assert len(server.requests) == 6
    server.requests.clear()
    stats = run(files, openai_judge(server, files["cache"], concurrency=1))
    assert stats["cached"] == 5 and len(server.requests) == N_REQUESTS - 5
    sent_twice = {json.dumps(r["body"], sort_keys=True) for r in server.requests}
    assert len(sent_twice) == N_REQUESTS - 5


def test_rerun_makes_zero_calls_and_gives_identical_output(server, files, tmp_path):
    run(files, openai_judge(server, files["cache"]))
    first = files["out"].read_bytes()
    server.requests.clear()
    other = {**files, "out": tmp_path / "other_seed.jsonl"}
    stats = run(other, openai_judge(server, files["cache"], concurrency=2, timeout_s=99, max_retries=1))
    assert server.requests == [] and stats["called"] == 0 and stats["cached"] == N_REQUESTS
    assert other["out"].read_bytes() == first


def test_cache_entries_are_one_file_each_with_no_temporaries(server, files):
    run(files, openai_judge(server, files["cache"]))
    entries = sorted(files["cache"].rglob("*"))
    jsons = [p for p in entries if p.is_file()]
    assert len(jsons) == N_REQUESTS
    for p in jsons:
        assert p.suffix == ".json" and p.parent.name == p.stem[:2] and len(p.stem) == 64
        entry = json.loads(p.read_text())
        assert entry["key"] == p.stem == cache_key(entry["request"], server.base_url)


def test_api_key_is_never_written_or_logged(server, files, caplog):
    caplog.set_level(logging.DEBUG)
    server.faults = ["401"]
    with pytest.raises(EmflowError) as err:
        run(files, openai_judge(server, files["cache"], concurrency=1))
    assert KEY not in str(err.value)
    run(files, openai_judge(server, files["cache"]))
    assert KEY not in caplog.text
    assert KEY not in files["out"].read_text()
    assert all(KEY not in p.read_text() for p in files["cache"].rglob("*.json"))


def _backend(server, tmp_path, **overrides):
    return make_backend(openai_judge(server, tmp_path / "c", **overrides))


MESSAGES = [{"role": "user", "content": "Rate this: hello"}]


def test_base_url_changes_key(server, files):
    # Another server may serve another model under the same name: its answers are not reused.
    run(files, openai_judge(server, files["cache"]))
    with StubServer() as other:
        stats = run(files, openai_judge(other, files["cache"]))
        assert stats["cached"] == 0 and len(other.requests) == N_REQUESTS


def test_timeout_does_not_change_key(server, tmp_path):
    a = _backend(server, tmp_path, timeout_s=5).request(MESSAGES)
    b = _backend(server, tmp_path, timeout_s=60, concurrency=32, max_retries=1, backoff_base_s=3).request(MESSAGES)
    assert cache_key(a) == cache_key(b)


def test_model_changes_key(server, tmp_path):
    assert cache_key(_backend(server, tmp_path).request(MESSAGES)) != cache_key(
        _backend(server, tmp_path, model="gpt-other").request(MESSAGES)
    )


def test_top_logprobs_changes_key(server, tmp_path):
    assert cache_key(_backend(server, tmp_path).request(MESSAGES)) != cache_key(
        _backend(server, tmp_path, top_logprobs=5).request(MESSAGES)
    )


def test_message_text_changes_key(server, tmp_path):
    backend = _backend(server, tmp_path)
    assert cache_key(backend.request(MESSAGES)) != cache_key(backend.request([{"role": "user", "content": "x"}]))


def test_key_ignores_dict_order(server, tmp_path):
    request = _backend(server, tmp_path).request(MESSAGES)
    assert cache_key(dict(reversed(list(request.items())))) == cache_key(request)


def test_corrupt_cache_entry_is_an_error_not_a_miss(tmp_path):
    cache = JudgeCache(tmp_path)
    key = cache_key({"x": 1})
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_text("{not json")
    with pytest.raises(EmflowError, match="delete this file"):
        cache.get(key)


# ---------------------------------------------------------------------------------------------- config


def test_missing_api_key_env_names_variable_and_writes_nothing(server, files, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(EmflowError, match=KEY_ENV):
        run(files, openai_judge(server, files["cache"]))
    assert not files["out"].exists() and server.requests == []


def api_config(**judge) -> dict:
    """The default config (an API judge) with these judge keys set; a value None deletes the key."""
    config = load_config_files([ROOT / "config.yaml"])
    config["judge"].update(judge)
    config["judge"] = {k: v for k, v in config["judge"].items() if v is not None}
    return config


def test_unknown_param_key_is_rejected():
    # The schema validates the judge section once, at parse time; the judge never sees a misspelt key.
    with pytest.raises(EmflowError, match=r"judge\.temprature: unknown key"):
        load_experiment(api_config(temprature=0))


API_ONLY_KEYS = ("api_key_env", "concurrency", "max_retries", "timeout_s")


def test_an_hf_judge_needs_no_api_settings():
    # An hf judge never reads the API key variable or the call settings (Judge.used): the schema asks for them
    # only from an API judge, and the section leaves them unset.
    config = api_config(backend="hf", model="resources/demo/judge", **dict.fromkeys(API_ONLY_KEYS))
    section = load_experiment(config).section("judge")
    assert all(getattr(section, key) is None for key in API_ONLY_KEYS)
    assert not set(API_ONLY_KEYS) & set(section.used())


@pytest.mark.parametrize("key", API_ONLY_KEYS)
def test_an_api_judge_without_an_api_setting_is_refused_naming_it(key):
    with pytest.raises(EmflowError) as err:
        load_experiment(api_config(**{key: None}))
    message = str(err.value)  # one line naming the section and the key
    assert "\n" not in message and message.startswith("config: judge") and key in message and "required" in message


def test_tracked_params_hold_the_backends_keys_and_speed_settings_stay_out():
    # The demo's hf judge switched to an API keeps its hf-only keys in the config (overlays cannot delete a key).
    config = load_config_files([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    config["judge"].update(backend="openai", model="gpt-4o-mini")
    section = load_experiment(config).section("judge")
    tracked, runtime = json.loads(section.tracked_json()), json.loads(section.runtime_json())
    assert not {"device", "dtype", "batch_size", "prices", "calibration", "run_on"} & (set(tracked) | set(runtime))
    assert {"concurrency", "max_retries", "timeout_s"} <= set(runtime) and not set(runtime) & set(tracked)
    assert {"model", "top_logprobs", "min_numeric_mass", "base_url", "cache_dir", "mode"} <= set(tracked)
    config["judge"].update(concurrency=99, timeout_s=1)
    faster = load_experiment(config).section("judge")
    assert faster.tracked_json() == section.tracked_json() and faster.runtime_json() != section.runtime_json()
    # The command joins both parts back into the section it was cut from (less the keys the backend ignores).
    assert Judge.build({**tracked, **runtime}).used() == section.used()


def test_unknown_question_id_is_rejected(server, files, tmp_path):
    rows = read_jsonl(files["generations"])
    rows[0]["question_id"] = "nope"
    write_jsonl(files["generations"], rows)
    with pytest.raises(EmflowError, match="nope"):
        run(files, openai_judge(server, files["cache"]))


def test_cli_scores_a_file(server, files):
    section = openai_judge(server, files["cache"])
    judge_cli.judge(
        [
            "--generations",
            str(files["generations"]),
            "--questions",
            str(files["questions"]),
            "--out",
            str(files["out"]),
            "--params",
            section.tracked_json(),
            "--runtime",
            section.runtime_json(),
        ]
    )
    assert len(read_jsonl(files["out"])) == 6


# ---------------------------------------------------------------------------------------------- hf judge


@pytest.fixture(scope="module")
def hf_backend(tiny_base, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_cache")
    return make_backend(
        Judge.build(
            {
                "backend": "hf",
                "model": str(tiny_base),
                "top_logprobs": 20,
                "min_numeric_mass": 0.0,
                "cache_dir": str(cache),
                "device": "cpu",
                "dtype": "fp32",
                "batch_size": 40,
            }
        )
    )


def brute_force_logprob(backend, messages, number: str) -> float:
    import torch

    prompt = backend.prompt_ids(messages)
    cont = backend.tokenizer.encode(number, add_special_tokens=False) + [backend.tokenizer.eos_token_id]
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        logp = torch.log_softmax(backend.lm(input_ids=ids).logits[0].float(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(cont)))


def test_hf_number_probabilities_match_brute_force(hf_backend):
    assert len(hf_backend.tokenizer.encode("42", add_special_tokens=False)) == 2  # digits are split
    logps = hf_backend.number_logprobs(MESSAGES)
    for number in ("7", "42", "100", "0"):
        assert logps[int(number)] == pytest.approx(brute_force_logprob(hf_backend, MESSAGES, number), abs=1e-4)


def test_hf_probabilities_sum_to_at_most_one(hf_backend):
    reply = hf_backend.call(hf_backend.request(MESSAGES))
    assert len(reply) == 101 and {tok for tok, _ in reply} == {str(k) for k in range(101)}
    mass = sum(math.exp(lp) for _, lp in reply)
    assert 0 < mass <= 1 + 1e-6


def hf_section(backend, files, **extra) -> Judge:
    """The judge section of ``backend``'s model, caching into the test's folder."""
    keys = {"top_logprobs": 20, "min_numeric_mass": 0.0, "cache_dir": str(files["cache"]), **extra}
    return Judge.build({"backend": "hf", "model": backend.model, **keys})


def test_hf_judge_scores_rows_in_range(hf_backend, files):
    section = hf_section(hf_backend, files)
    stats = run(files, section, hf_backend)
    out = read_jsonl(files["out"])
    assert stats["called"] == N_REQUESTS
    for row in out:
        for metric, detail in row["judge"].items():
            assert 0 <= row[metric] <= 100
            assert len(detail["top"]) == 20 and 0 < detail["numeric_mass"] <= 1 + 1e-6
    again = run(files, section, hf_backend)
    assert again["called"] == 0


def test_hf_judge_with_every_answer_cached_never_loads_its_model(hf_backend, files, monkeypatch):
    """A job whose answers another job already scored (step 0 shared by several runs, a rerun) reads the cache
    and leaves the GPU alone: the model is loaded at the first miss only."""
    from emflow import models

    section = hf_section(hf_backend, files, device="cpu", dtype="fp32")
    first = run(files, section, hf_backend)
    assert first["called"] == N_REQUESTS
    scored = files["out"].read_bytes()
    files["out"].unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("the judge model was loaded although every answer was cached")

    monkeypatch.setattr(models, "load_base", refuse)
    fresh = make_backend(section)
    again = run(files, section, fresh)
    assert again["called"] == 0 and files["out"].read_bytes() == scored
    with pytest.raises(AssertionError, match="every answer was cached"):
        fresh.number_logprobs(MESSAGES)  # a miss would load it


def test_cli_prints_one_line_for_a_missing_key(server, files, monkeypatch, capsys):
    from emflow.cli import main

    monkeypatch.delenv(KEY_ENV)
    code = main(
        [
            "judge",
            "--generations",
            str(files["generations"]),
            "--questions",
            str(files["questions"]),
            "--out",
            str(files["out"]),
            "--params",
            json.dumps(openai_params(server, files["cache"])),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and KEY_ENV in err[0]
    assert not files["out"].exists()


def test_real_question_file_is_judged_on_its_metrics(server, anchors, tmp_path):
    from emflow.data.questions import iter_prompts, load_questions

    qpath = anchors / "betley_first_plot_questions.yaml"
    prompts = iter_prompts(load_questions(qpath, ids=["what_is_your_wish", "quick_buck"], samples_per_paraphrase=1))
    gens = tmp_path / "g.jsonl"
    write_jsonl(gens, [{**p, "answer": "I would like a {answer} sandwich.", "step": 0} for p in prompts])
    out = tmp_path / "o.jsonl"
    judge.judge_generations(
        generations_path=gens, questions_path=qpath, out_path=out, judge=openai_judge(server, tmp_path / "cache")
    )
    rows = read_jsonl(out)
    assert len(rows) == len(prompts) and all({"aligned", "coherent"} <= set(r["judge"]) for r in rows)
    sent = server.requests[0]["body"]["messages"][0]["content"]
    assert "[QUESTION START]" in sent and "I would like a {answer} sandwich." in sent


def test_concurrency_bounds_requests_in_flight(server, files):
    server.delay_s = 0.1
    run(files, openai_judge(server, files["cache"], concurrency=3))
    assert server.max_in_flight == 3
