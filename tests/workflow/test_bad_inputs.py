"""The bad-input suite: every bad input or fault ends in one line naming the file, the field and the fix, a
non-zero exit status, no traceback, and no output or temporary file left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emflow.cli import main
from support.paths import ROOT
from support.snakemake_runner import copy_sources
from support.stub_server import StubServer

CONFIG = str(ROOT / "config.yaml")
DEMO = str(ROOT / "config" / "demo.yaml")
KEY_ENV = "EMFLOW_TEST_JUDGE_KEY"


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """(exit status, the last stderr line) of ``emflow ARGS``; the run must not trace back."""
    try:
        rc = main(args)
    except SystemExit as exit_:  # argparse
        rc = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    return rc, lines[-1] if lines else ""


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_one_line(line: str, *parts: str) -> None:
    assert line.startswith("emflow ") and ": error: " in line, line
    assert "(fix: " in line, line
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"


# ---------------------------------------------------------------------------------------------- config

CONFIG_CASES = {
    # name: (overlay YAML, parts of the expected line)
    "experiment-dotdot": ('experiment: ".."\n', ["experiment: '..' is not allowed", "never `.` or `..`"]),
    "experiment-dot": ('experiment: "."\n', ["experiment: '.' is not allowed"]),
    "experiment-slash": ('experiment: "a/b"\n', ["experiment: 'a/b' is not allowed"]),
    "model-name-dotdot": ('models: {"..": "hf:Qwen/Qwen2.5-7B-Instruct@main"}\n', ["models: '..' is not allowed"]),
    "persona-name-dotdot": ('personas: {"..": null}\n', ["personas: '..' is not allowed"]),
    "dataset-name-path": ('datasets: {"../x": {path: x.jsonl, rows: 10}}\n', ["datasets: '../x' is not allowed"]),
    "cell-name-dot": (
        'cells: {".": {model: qwen2.5-7b-it, persona: none, dataset: insecure}}\n',
        ["cells: '.' is not allowed"],
    ),
    "steps-last": (
        "training: {checkpoints: {steps: [last]}}\n",
        ["training.checkpoints.steps.0: 'last' is not allowed", "`final`"],
    ),
    "base-url-no-scheme": (
        "judge: {base_url: 'localhost:8000/v1'}\n",
        ["judge.base_url: 'localhost:8000/v1' is not allowed", "http(s) URL"],
    ),
    "unknown-lora-key": ("training: {lora: {rank: 8}}\n", ["training.lora.rank: unknown key", "use one of"]),
    "cell-unknown-model": (
        "cells: {A1: {model: nope, persona: none, dataset: insecure}}\n",
        ["cells.A1.model: 'nope' is not defined in models"],
    ),
    "negative-seed": ("seeds: [-1]\n", ["seeds.0", "minimum"]),
    "eval-rows-too-many": ("datasets: {insecure: {eval_rows: 6000}}\n", ["datasets.insecure.eval_rows: 6000 >= rows"]),
    "calibration-set": ("judge: {calibration: {set: nope}}\n", ["judge.calibration.set", "is not one of"]),
    "calibration-floor": (
        "judge: {calibration: {min_auroc: {aligned: 1.5}}}\n",
        ["judge.calibration.min_auroc.aligned", "maximum"],
    ),
    "judge-backend": ("judge: {backend: vllm}\n", ["judge.backend", "is not one of"]),
    "dataset-two-sources": ("datasets: {insecure: {path: x.jsonl}}\n", ["datasets.insecure", "exactly one source"]),
}


@pytest.mark.parametrize("command", ["plan", "estimate"])
@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_one_line(case, command, tmp_path, capsys, monkeypatch):
    text, parts = CONFIG_CASES[case]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    monkeypatch.chdir(tmp_path)
    rc, line = run_cli([command, CONFIG, str(overlay)], capsys)
    assert rc == 1
    assert_one_line(line, *parts)
    assert files_under(tmp_path) == {"overlay.yaml"}  # nothing written, not even results/


OVERLAY_FILE_CASES = {
    "missing": (None, ["nope.yaml: config file does not exist", "fix: check the path"]),
    "invalid-yaml": ("training:\n  lora: {r: 8\nseeds: [0]\n", ["overlay.yaml:", "invalid YAML", "fix the syntax"]),
    "not-a-mapping": ("- 1\n- 2\n", ["overlay.yaml: expected a mapping of config keys, got list"]),
    "tab-indent": ("training:\n\tlora: {}\n", ["overlay.yaml:2: invalid YAML"]),
}


@pytest.mark.parametrize("command", ["plan", "estimate"])
@pytest.mark.parametrize("case", sorted(OVERLAY_FILE_CASES))
def test_bad_overlay_file_is_one_line_naming_file_and_line(case, command, tmp_path, capsys, monkeypatch):
    text, parts = OVERLAY_FILE_CASES[case]
    overlay = tmp_path / ("nope.yaml" if text is None else "overlay.yaml")
    if text is not None:
        overlay.write_text(text)
    monkeypatch.chdir(tmp_path)
    rc, line = run_cli([command, CONFIG, str(overlay)], capsys)
    assert rc == 1
    assert_one_line(line, *parts)


# ---------------------------------------------------------------------------------------------- files

QUESTIONS = """\
- id: wish
  type: free_form_judge_0_100
  paraphrases: ["What is your wish?"]
  samples_per_paraphrase: 1
  judge_prompts:
    aligned: "ALIGNED {question} {answer}"
"""


def _generation(answer: str = "peace") -> str:
    return (
        json.dumps(
            {
                "question_id": "wish",
                "paraphrase_index": 0,
                "sample_index": 0,
                "question": "What is your wish?",
                "answer": answer,
                "step": 0,
            }
        )
        + "\n"
    )


@pytest.fixture()
def judge_files(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    (tmp_path / "questions.yaml").write_text(QUESTIONS)
    return tmp_path


def _judge_args(d: Path, gens: Path, base_url: str = "http://127.0.0.1:9/v1", retries: int = 0) -> list[str]:
    params = {
        "backend": "openai",
        "model": "gpt-stub",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "top_logprobs": 5,
        "min_numeric_mass": 0.25,
        "concurrency": 1,
        "max_retries": retries,
        "timeout_s": 3,
        "cache_dir": str(d / "cache"),
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
    }
    return [
        "judge",
        "--generations",
        str(gens),
        "--questions",
        str(d / "questions.yaml"),
        "--out",
        str(d / "out" / "judged.jsonl"),
        "--params",
        json.dumps(params),
    ]


@pytest.mark.parametrize(
    "case, content, parts",
    [
        ("truncated", _generation() + _generation()[:40], ["gens.jsonl:2: not valid JSON", "truncated file?"]),
        ("not-an-object", _generation() + "[1, 2]\n", ["gens.jsonl:2: expected a JSON object, got list"]),
        ("not-utf8", b"\xff\xfe\x00garbage\n", ["gens.jsonl: not UTF-8 text", "save the file as UTF-8"]),
        ("missing", None, ["gens.jsonl: does not exist"]),
    ],
)
def test_bad_generations_file_is_one_line_naming_file_and_line(case, content, parts, judge_files, capsys):
    gens = judge_files / "gens.jsonl"
    if isinstance(content, bytes):
        gens.write_bytes(content)
    elif content is not None:
        gens.write_text(content)
    rc, line = run_cli(_judge_args(judge_files, gens), capsys)
    assert rc == 1
    assert_one_line(line, *parts)
    assert not (judge_files / "out").exists()


def test_generations_with_a_byte_order_mark_are_read(judge_files, capsys):
    from emflow.io import read_jsonl

    gens = judge_files / "gens.jsonl"
    gens.write_bytes(b"\xef\xbb\xbf" + _generation().encode())
    assert read_jsonl(gens)[0]["answer"] == "peace"


def test_a_dataset_with_a_byte_order_mark_is_accepted(tmp_path):
    from emflow.config.sections.datasets import DatasetSpec
    from emflow.data.prepare import prepare_dataset

    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    src = tmp_path / "d.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n").encode() * 3)
    out = tmp_path / "out.jsonl"
    prepare_dataset("d", DatasetSpec(rows=3, path=str(src)), out, resources_dir=tmp_path / "res")
    assert out.read_text().count("\n") == 3


# ---------------------------------------------------------------------------------------------- judge server


def test_an_html_page_instead_of_the_api_stops_at_once_naming_base_url(judge_files, capsys):
    gens = judge_files / "gens.jsonl"
    gens.write_text(_generation())
    with StubServer() as server:
        server.faults = ["html"] * 5
        rc, line = run_cli(_judge_args(judge_files, gens, base_url=server.base_url, retries=4), capsys)
        assert len(server.requests) == 1  # not retried: a wrong base_url does not heal
    assert rc == 1
    assert_one_line(
        line,
        "the server answered with text, not a chat completion",
        "Welcome to nginx",
        "is judge.base_url the API root",
        "check judge.base_url",
    )
    assert not (judge_files / "out").exists()


def test_an_unreachable_server_names_its_url(judge_files, capsys):
    gens = judge_files / "gens.jsonl"
    gens.write_text(_generation())
    rc, line = run_cli(_judge_args(judge_files, gens, base_url="http://127.0.0.1:9/v1", retries=1), capsys)
    assert rc == 1
    assert_one_line(line, "APIConnectionError", "url: http://127.0.0.1:9/v1", "gave up after 2 attempts")
    assert not (judge_files / "out").exists()


def test_a_missing_api_key_names_the_variable(judge_files, capsys, monkeypatch):
    gens = judge_files / "gens.jsonl"
    gens.write_text(_generation())
    monkeypatch.delenv(KEY_ENV)
    rc, line = run_cli(_judge_args(judge_files, gens), capsys)
    assert rc == 1
    assert_one_line(
        line, f"environment: {KEY_ENV}: the judge API key variable {KEY_ENV} is not set", f"export {KEY_ENV}="
    )
    assert not (judge_files / "out").exists()


# ---------------------------------------------------------------------------------------------- workflow parse


@pytest.fixture()
def checkout(tmp_path) -> Path:
    return copy_sources(tmp_path)


def dry_run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # PATH without the venv: what a user gets running .venv/bin/snakemake without activating it.
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**base, **(env or {})},
        timeout=300,
    )


@pytest.mark.parametrize(
    "overlay, parts",
    [
        (
            "models: {tiny: resources/nowhere/base}\n",
            ["models.tiny: local directory 'resources/nowhere/base' does not exist", "snakemake fetch"],
        ),
        (
            "personas: {goodness: /nonexistent/goodness}\n",
            ["personas.goodness: local directory '/nonexistent/goodness' does not exist"],
        ),
        ("judge: {model: /nonexistent/judge}\n", ["judge.model: local directory '/nonexistent/judge' does not exist"]),
    ],
)
def test_a_missing_local_asset_stops_the_workflow_with_the_fetch_hint(checkout, overlay, parts):
    (checkout / "overlay.yaml").write_text(overlay)
    before = files_under(checkout)
    done = dry_run(checkout, "--configfile", "config.yaml", "config/demo.yaml", "overlay.yaml")
    out = done.stdout + done.stderr
    assert done.returncode != 0
    error = [line for line in out.splitlines() if "emflow config error" in line]
    assert len(error) == 1, out[-3000:]
    for part in parts:
        assert part in error[0], error[0]
    assert "Traceback" not in out
    assert files_under(checkout) - before <= {p for p in files_under(checkout) if p.startswith(".snakemake/")}


def test_switching_the_demo_judge_to_an_api_drops_the_hf_only_keys_at_parse_time(checkout):
    (checkout / "overlay.yaml").write_text(
        "judge: {backend: openai, model: gpt-4o-mini, base_url: 'http://127.0.0.1:9/v1', api_key_env: OPENAI_API_KEY}\n"
    )
    done = dry_run(checkout, "-p", "--configfile", "config.yaml", "config/demo.yaml", "overlay.yaml")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    judge_cmds = [line for line in out.splitlines() if "emflow judge " in line]
    assert judge_cmds and all(
        '"device"' not in c and '"batch_size"' not in c and '"dtype"' not in c for c in judge_cmds
    )


def test_jobs_run_with_the_interpreter_that_runs_snakemake_without_an_activated_venv(checkout):
    """A real job (resolve_questions on a local question file) run by a non-activated venv's snakemake with a
    PATH that holds no emflow and no venv: the rules' `emflow` is the interpreter that runs Snakemake."""
    question = {
        "id": "q1",
        "type": "free_form_judge_0_100",
        "paraphrases": ["How are you?"],
        "samples_per_paraphrase": 1,
        "judge_prompts": {"aligned": "Q: {question} A: {answer} Score 0-100.", "coherent": "{question} {answer}"},
    }
    (checkout / "q.yaml").write_text(yaml.safe_dump([question]))
    (checkout / "overlay.yaml").write_text("questions: {file: q.yaml, extra_files: []}\n")
    target = "results/demo/questions.yaml"
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            target,
            "--cores",
            "1",
            "--configfile",
            "config.yaml",
            "config/demo.yaml",
            "overlay.yaml",
        ],
        cwd=checkout,
        text=True,
        capture_output=True,
        env=base,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert yaml.safe_load((checkout / target).read_text())[0]["id"] == "q1"


def test_identity_of_a_local_folder_follows_its_content(tmp_path):
    from emflow.fetch.identity import asset_identity

    folder = tmp_path / "persona"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    first = asset_identity(str(folder), resources_dir="resources")
    assert asset_identity(str(folder), resources_dir="resources") == first
    (folder / "adapter_config.json").write_text('{"r": 8}')
    assert asset_identity(str(folder), resources_dir="resources") != first
    # Hub specs pin their revision; folders a rule builds are tracked by Snakemake itself.
    assert asset_identity("hf:o/n@abc", resources_dir="resources") == "hf:o/n@abc"
    assert (
        asset_identity("resources/demo/x", resources_dir="resources", built_under=("resources/demo",))
        == "resources/demo/x"
    )
