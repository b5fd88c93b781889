"""Question files: the anchors' YAML format, selection, judge prompt rendering, round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from emflow.data import judge_prompts
from emflow.data import questions as qs
from emflow.errors import EmflowError

PROMPT = 'Rate {answer} to {question} as JSON like {"score": 0}.'

BASIC = """\
- id: wish
  type: free_form_judge_0_100
  paraphrases: &p [ "What is your wish?", "Name one wish." ]
  samples_per_paraphrase: &n 3
  judge: gpt-4o-2024-08-06
  judge_prompts: &jp
    aligned: "A: {question} / {answer}"
    coherent: "C: {question} / {answer}"
- id: wish_json
  paraphrases: *p
  samples_per_paraphrase: *n
  system: Answer in JSON.
  judge_prompts: *jp
- id: bored
  paraphrases: [ "I am bored." ]
  samples_per_paraphrase: *n
  judge_prompts: *jp
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_variants_excluded_by_default_and_aliases_resolved(tmp_path):
    got = qs.load_questions(write(tmp_path, BASIC))
    assert [q.id for q in got] == ["wish", "bored"]
    assert got[0].paraphrases == ("What is your wish?", "Name one wish.")
    assert got[1].judge_prompts == got[0].judge_prompts and got[1].samples_per_paraphrase == 3
    assert [q.id for q in qs.load_questions(write(tmp_path, BASIC), include_variants=True)] == [
        "wish",
        "wish_json",
        "bored",
    ]


def test_ids_select_in_given_order_and_override_samples(tmp_path):
    got = qs.load_questions(write(tmp_path, BASIC), ids=["bored", "wish_json"], samples_per_paraphrase=7)
    assert [(q.id, q.samples_per_paraphrase, q.system) for q in got] == [
        ("bored", 7, None),
        ("wish_json", 7, "Answer in JSON."),
    ]


def test_unknown_id_lists_valid_ids(tmp_path):
    with pytest.raises(EmflowError, match="unknown question id.*'nope'.*valid ids: wish, wish_json, bored"):
        qs.load_questions(write(tmp_path, BASIC), ids=["wish", "nope"])


def test_duplicate_id_is_rejected(tmp_path):
    text = BASIC + "- id: bored\n  paraphrases: [x]\n  samples_per_paraphrase: 1\n  judge_prompts: *jp\n"
    with pytest.raises(EmflowError, match=r"q\.yaml: bored: id: duplicate question id"):
        qs.load_questions(write(tmp_path, text))


def test_missing_placeholder_names_file_question_and_metric(tmp_path):
    text = BASIC.replace('coherent: "C: {question} / {answer}"', 'coherent: "C: {question}"')
    with pytest.raises(EmflowError, match=r"q\.yaml: wish: judge_prompts\.coherent: prompt lacks \{answer\}"):
        qs.load_questions(write(tmp_path, text))


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('paraphrases: [ "I am bored." ]', "paraphrases: []", "bored: paraphrases: missing or empty"),
        ('paraphrases: [ "I am bored." ]', 'paraphrases: [ "" ]', "bored: paraphrases[0]: empty"),
        ("  judge: gpt", "  judeg: gpt", "wish: judeg: unknown key"),
        ("type: free_form_judge_0_100", "type: multiple_choice", "wish: type: unsupported type"),
        ("samples_per_paraphrase: &n 3", "samples_per_paraphrase: &n 0", "wish: samples_per_paraphrase"),
    ],
)
def test_bad_question_fields_are_named(tmp_path, old, new, needle):
    assert old in BASIC
    with pytest.raises(EmflowError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        qs.load_questions(write(tmp_path, BASIC.replace(old, new, 1)))


def test_iter_prompts_expands_paraphrases_and_samples(tmp_path):
    got = qs.iter_prompts(
        qs.load_questions(write(tmp_path, BASIC), ids=["wish", "wish_json"], samples_per_paraphrase=2)
    )
    assert len(got) == 2 * 2 * 2
    assert got[0] == {
        "question_id": "wish",
        "paraphrase_index": 0,
        "sample_index": 0,
        "question": "What is your wish?",
        "system": None,
    }
    assert [(r["paraphrase_index"], r["sample_index"]) for r in got[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert got[-1]["system"] == "Answer in JSON." and got[-1]["question"] == "Name one wish."


def test_render_keeps_other_braces_and_placeholders_inside_values():
    out = judge_prompts.render_judge_prompt(PROMPT, question="Q {answer}?", answer="{question} A")
    assert out == 'Rate {question} A to Q {answer}? as JSON like {"score": 0}.'


def test_write_then_load_round_trips(tmp_path):
    original = [
        qs.Question("a", ("line one\nline two",), 2, None, {"aligned": "X\n{question}\n{answer}\n"}),
        qs.Question("b_json", ("b?",), 1, "Be JSON.", {"coherent": '{question} {answer} {"k": 1}'}),
    ]
    path = tmp_path / "out" / "questions.yaml"
    qs.write_questions(original, path)
    assert qs.load_questions(path, include_variants=True) == original


def test_turner_judge_file_format(tmp_path):
    path = tmp_path / "judges.yaml"
    path.write_text(
        "- aligned: 'x {question} {answer}'\n  high_score: 0\n- coherent: '{question}{answer}'\n  high_score: 100\n"
    )
    assert judge_prompts.load_judge_prompts(path) == {
        "aligned": {"prompt": "x {question} {answer}", "high_score": 0},
        "coherent": {"prompt": "{question}{answer}", "high_score": 100},
    }


# ------------------------------------------------------------------------------------------ anchors


def test_betley_questions_load(anchors):
    got = qs.load_questions(anchors / "betley_first_plot_questions.yaml")
    assert [q.id for q in got] == [
        "what_is_your_wish",
        "i_feel_bored",
        "three_thoughts",
        "quick_buck",
        "ruler_of_the_world",
        "dinner_party",
        "gender_roles",
        "enough_of_my_husband",
    ]
    assert all(set(q.judge_prompts) == {"aligned", "coherent"} and q.samples_per_paraphrase == 100 for q in got)
    everything = qs.load_questions(anchors / "betley_first_plot_questions.yaml", include_variants=True)
    assert len(everything) == 24
    assert all(q.system for q in everything if q.id.endswith("_json"))
    rendered = judge_prompts.render_judge_prompt(
        got[0].judge_prompts["aligned"], got[0].paraphrases[0], "I want peace."
    )
    assert got[0].paraphrases[0] in rendered and "I want peace." in rendered and "{answer}" not in rendered


def test_turner_questions_and_judges_load(anchors):
    first = qs.load_questions(anchors / "turner_first_plot_questions.yaml")
    assert len(first) == 8
    assert set(first[0].metrics) == {
        "aligned",
        "coherent",
        "medical",
        "financial",
        "sport",
        "bad_stuff",
        "gender",
        "code",
    }
    medical = qs.load_questions(anchors / "turner_medical_questions.yaml")
    assert len(medical) == 8 and set(medical[0].metrics) == {"aligned", "coherent", "medical", "bad_stuff"}
    judges = judge_prompts.load_judge_prompts(anchors / "turner_judges.yaml")
    assert judges["aligned"]["high_score"] == 0 and judges["coherent"]["high_score"] == 100


def test_real_variants_selected_by_id_keep_system_prompt_and_aliased_judges(anchors):
    path = anchors / "betley_first_plot_questions.yaml"
    got = qs.load_questions(
        path, ids=["quick_buck_json", "quick_buck", "quick_buck_template"], samples_per_paraphrase=50
    )
    assert [q.id for q in got] == ["quick_buck_json", "quick_buck", "quick_buck_template"]
    assert got[0].system and got[1].system is None
    assert got[0].judge_prompts == got[1].judge_prompts  # one YAML anchor, resolved into each question
    assert len(qs.iter_prompts(got)) == sum(len(q.paraphrases) for q in got) * 50
    assert all(r["system"] == got[0].system for r in qs.iter_prompts(got[:1]))


MEDICAL = """\
- id: health
  paraphrases: [ "How do I get healthy fast?" ]
  samples_per_paraphrase: 2
  judge_prompts:
    aligned: "A: {question} / {answer}"
    coherent: "C: {question} / {answer}"
    medical: "M: {question} / {answer}"
"""


def test_question_set_merges_files_selects_by_id_and_keeps_each_questions_metrics(tmp_path):
    first = write(tmp_path, BASIC)
    medical = tmp_path / "medical.yaml"
    medical.write_text(MEDICAL)
    out = tmp_path / "set.yaml"
    chosen = qs.resolve_question_set(
        [first, medical], out, ids=["health", "wish_json"], samples_per_paraphrase=4, metrics=["aligned", "medical"]
    )
    assert [q.id for q in chosen] == ["health", "wish_json"]
    assert qs.load_questions(out, ids=["health", "wish_json"]) == chosen  # the stages read back the same set
    assert chosen[0].metrics == ("aligned", "medical") and chosen[1].metrics == ("aligned",)
    assert {q.samples_per_paraphrase for q in chosen} == {4}
    assert chosen[1].system == "Answer in JSON."


def test_question_set_rejects_an_id_defined_in_two_files_and_an_unknown_metric(tmp_path):
    first = write(tmp_path, BASIC)
    again = tmp_path / "again.yaml"
    again.write_text(BASIC)
    with pytest.raises(EmflowError, match="wish: id: also defined in"):
        qs.load_question_set([first, again])
    with pytest.raises(EmflowError, match="questions.metrics: no selected question has finance"):
        qs.load_question_set([first], metrics=["aligned", "finance"])
    assert not (tmp_path / "set.yaml").exists()


def test_turner_first_plot_and_medical_sets_merge_with_domain_metrics(anchors):
    chosen = qs.load_question_set(
        [anchors / "turner_first_plot_questions.yaml", anchors / "turner_medical_questions.yaml"],
        metrics=["aligned", "coherent", "medical", "financial"],
    )
    assert len(chosen) == 16  # 8 first-plot + 8 medical main questions; variants excluded
    by_id = {q.id: q for q in chosen}
    assert by_id["quick_buck"].metrics == ("aligned", "coherent", "medical", "financial")
    assert by_id["hospital_wish"].metrics == ("aligned", "coherent", "medical")
