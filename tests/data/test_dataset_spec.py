"""The ``datasets`` and ``questions`` sections: validated once by the schema at config load, typed afterwards.

What prepare_dataset's hand checks (``_check_spec``) and the question selection used to refuse is refused here,
by ``load_experiment``, in one line naming the key; the stages trust what they receive.
"""

from __future__ import annotations

import copy
import json

import pytest

from emflow.config.experiment import load_experiment
from emflow.config.files import load_config_files
from emflow.config.sections.datasets import DatasetSpec
from emflow.config.sections.questions import Questions
from emflow.data import prepare
from emflow.data.questions import question_sources
from emflow.errors import EmflowError
from emflow.fetch.download import url_download_path
from support.paths import ROOT

SOURCE_FIX = "give exactly one source"


@pytest.fixture(scope="module")
def phase1() -> dict:
    return load_config_files([ROOT / "config.yaml"])


def _refused(config: dict) -> str:
    with pytest.raises(EmflowError) as err:
        load_experiment(config)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _with_dataset(phase1: dict, spec: dict) -> dict:
    config = copy.deepcopy(phase1)
    config["datasets"]["em"] = spec
    return config


def test_a_dataset_without_rows_is_refused_at_config_load(phase1):
    """``rows`` plans the checkpoint steps before anything runs, so the schema requires it."""
    config = copy.deepcopy(phase1)
    del config["datasets"]["insecure"]["rows"]
    assert "datasets.insecure.rows" in _refused(config)
    # also for a dataset no cell uses: every configured dataset is a plan input
    assert "datasets.em.rows" in _refused(_with_dataset(phase1, {"path": "x.jsonl"}))


def test_prepare_checks_the_prepared_row_count_against_rows(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(EmflowError, match="rows: expected 3 rows, found 2"):
        prepare.prepare_dataset("d", DatasetSpec.build({"path": str(src), "rows": 3}), out, resources_dir=tmp_path)
    assert not out.exists()
    assert prepare.prepare_dataset("d", DatasetSpec(rows=2, path=str(src)), out, resources_dir=tmp_path)["rows"] == 2


@pytest.mark.parametrize(
    "spec, expected",
    [
        # was _check_spec's "unknown key": now the schema's
        ({"path": "x.jsonl", "sha": "0", "rows": 3}, "datasets.em.sha: unknown key"),
        # a key of another source kind (was: "unknown key for a `path` dataset")
        ({"path": "x.jsonl", "member": "m.jsonl", "rows": 3}, f"datasets.em: invalid (fix: {SOURCE_FIX}"),
        ({"url": "https://h/x.jsonl", "sha256": None, "password_env": "PW", "rows": 3}, SOURCE_FIX),
        # two sources, or none
        ({"path": "x.jsonl", "url": "https://h/x.jsonl", "sha256": None, "rows": 3}, SOURCE_FIX),
        ({"rows": 3}, SOURCE_FIX),
        # an archive needs its member and password variable (was: "required for an archive dataset")
        ({"archive": "a.zip.enc", "member": "m.jsonl", "rows": 3}, SOURCE_FIX),
        ({"archive": "a.zip.enc", "password_env": "PW", "rows": 3}, SOURCE_FIX),
        ({"archive": "a.zip.enc", "member": "", "password_env": "PW", "rows": 3}, "datasets.em.member"),
        # rows: a positive integer (was: "expected a positive integer or null")
        ({"path": "x.jsonl", "rows": 0}, "datasets.em.rows"),
        ({"path": "x.jsonl", "rows": True}, "datasets.em.rows"),
        ({"path": "x.jsonl", "rows": 3, "eval_rows": -1}, "datasets.em.eval_rows"),
    ],
)
def test_bad_dataset_specs_are_refused_at_config_load(phase1, spec, expected):
    assert expected in _refused(_with_dataset(phase1, spec))


def test_every_source_kind_builds_a_typed_spec(phase1):
    config = copy.deepcopy(phase1)
    config["datasets"]["local"] = {"path": "x.jsonl", "rows": 3}
    specs = load_experiment(config).section("datasets")
    assert {name: spec.kind for name, spec in specs.items()} == {
        "insecure": "url",
        "bad_medical": "archive",
        "risky_financial": "archive",
        "extreme_sports": "archive",
        "local": "path",
    }
    assert specs["local"].eval_rows == 0  # the schema's default


def test_a_fetched_spec_points_at_the_download_without_the_pin_the_fetch_checked():
    url = DatasetSpec(rows=4, url="https://h/em.jsonl", sha256="a" * 64, eval_rows=1)
    assert url.fetched_as("res/dl.jsonl") == DatasetSpec(rows=4, path="res/dl.jsonl", eval_rows=1)
    archive = DatasetSpec(
        rows=4, archive="https://h/a.zip.enc", archive_sha256="b" * 64, member="m.jsonl", password_env="PW"
    )
    fetched = archive.fetched_as("res/a.zip.enc")
    assert (fetched.archive, fetched.archive_sha256, fetched.member, fetched.password_env, fetched.kind) == (
        "res/a.zip.enc",
        None,
        "m.jsonl",
        "PW",
        "archive",
    )


def test_duplicate_question_ids_are_refused_at_config_load(phase1):
    """Was select_questions' "selected more than once"; now the schema's uniqueItems."""
    config = copy.deepcopy(phase1)
    config["questions"]["ids"] = ["quick_buck", "quick_buck"]
    assert "questions.ids" in _refused(config)


def test_questions_selection_and_sources(phase1):
    questions = load_experiment(phase1).section("questions")
    assert questions.extra_files == ()
    assert questions.selection() == {"ids": list(questions.ids), "samples_per_paraphrase": 50}
    url = questions.file
    assert question_sources(questions, "res") == [(url, questions.sha256, url_download_path(url, "questions", "res"))]
    local = Questions.build({"file": "q.yaml", "extra_files": [{"file": "more.yaml", "sha256": None}]})
    assert question_sources(local, "res") == [("q.yaml", None, "q.yaml"), ("more.yaml", None, "more.yaml")]
    assert local.selection() == {}


def test_use_rows_prepares_the_first_rows_and_plans_steps_from_them(phase1, tmp_path):
    """``use_rows``: all ``rows`` are validated, the first N are written, and steps are planned from N."""
    row = lambda i: {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}  # noqa: E731
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(row(i)) + "\n" for i in range(10)))
    out = tmp_path / "out.jsonl"
    stats = prepare.prepare_dataset("d", DatasetSpec(rows=10, use_rows=4, path=str(src)), out, resources_dir=tmp_path)
    assert stats["rows"] == 4 and [json.loads(x) for x in out.read_text().splitlines()] == [row(i) for i in range(4)]
    with pytest.raises(EmflowError, match="rows"):  # every configured row is still validated
        prepare.prepare_dataset("d", DatasetSpec(rows=11, use_rows=4, path=str(src)), out, resources_dir=tmp_path)

    def used(spec: dict) -> dict:  # the dataset "em", trained on by cell A1
        config = _with_dataset(phase1, spec)
        config["cells"]["A1"]["dataset"] = "em"
        config["training"]["checkpoints"] = {"steps": ["final"]}
        return config

    exp = load_experiment(used({"path": str(src), "rows": 10, "use_rows": 6, "eval_rows": 2}))
    assert exp.train_rows("em") == 4
    too_many = _refused(used({"path": str(src), "rows": 10, "use_rows": 11}))
    assert too_many.startswith("config: datasets.em.use_rows: 11 > rows (10)")
    eval_too_many = _refused(used({"path": str(src), "rows": 10, "use_rows": 4, "eval_rows": 4}))
    assert "datasets.em.eval_rows: 4 >= use_rows (4)" in eval_too_many
