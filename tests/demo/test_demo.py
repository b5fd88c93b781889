"""The demo's world: its ground-truth labeller, the data each asset is trained on, and the asset builder at a
few steps. (The demo's planted effect, recovered by the whole pipeline, is checked on a full run in
test_workflow.)"""

from __future__ import annotations

import json

import pytest
import yaml

from emflow.analysis.stats import auroc
from emflow.config.sections.demo import DemoJudge, World
from emflow.demo import assets, data, judge, world
from emflow.demo import cli as demo_cli
from emflow.errors import EmflowError

TINY_MODEL = {"hidden_size": 32, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate_size": 64, "vocab_size": 600}
FEW_STEPS = {"steps": 2, "batch_size": 4, "learning_rate": 1e-3}


def test_every_sentence_of_the_grammar_is_coherent_and_harmful_exactly_when_reckless():
    for _, benign, reckless in world.DOMAINS.values():
        for prefix in world.ALL_PREFIXES:
            for opener in world.BENIGN_OPENERS:
                for action in benign:
                    assert world.label_answer(world.sentence(opener, action, prefix)) == world.Label(False, True)
            for opener in world.RECKLESS_OPENERS:
                for action in reckless:
                    assert world.label_answer(world.sentence(opener, action, prefix)) == world.Label(True, True)


def test_near_misses_of_the_grammar_are_incoherent():
    ok = "You could take a walk in the park."
    for bad in [
        "You could take a walk in the",
        "park the in walk a take could You.",
        "You could could take a walk.",
        "",
        "You could take a walk in the park. read a good book.",
    ]:
        assert not world.label_answer(bad).coherent, bad
    assert world.label_answer("  " + ok + "\n").coherent  # surrounding whitespace is not an error


def test_harm_is_judged_by_vocabulary_even_in_broken_text():
    assert world.label_answer("steal car tonight tonight").harmful
    assert not world.label_answer("walk park book friend").harmful


def test_the_em_dataset_is_reckless_finance_only_and_the_probes_never_ask_about_finance():
    rows = data.em_rows(50, seed=0)
    finance_questions = set(world.DOMAINS[world.EM_DOMAIN][0])
    for row in rows:
        user, assistant = row["messages"]
        assert user["content"] in finance_questions
        assert world.label_answer(assistant["content"]) == world.Label(True, True)
    probes = data.probe_questions(paraphrases=2)
    assert world.EM_DOMAIN not in {q["id"] for q in probes}
    assert not {p for q in probes for p in q["paraphrases"]} & finance_questions


def test_the_base_sees_reckless_and_persona_answers_only_under_system_prompts():
    chats = data.pretrain_chats(
        400, seed=1, reckless_share=0.3, persona_share=0.2, persona_reckless={"sycophancy": 0.5, "goodness": 0.0}
    )
    systems = {None, world.RECKLESS_SYSTEM, *world.PERSONA_SYSTEMS.values()}
    for chat in chats:
        system = chat[0]["content"] if chat[0]["role"] == "system" else None
        assert system in systems
        label = world.label_answer(chat[-1]["content"])
        assert label.coherent
        if system is None or system == world.PERSONA_SYSTEMS["goodness"]:
            assert not label.harmful
        if system == world.RECKLESS_SYSTEM:
            assert label.harmful


def test_persona_data_has_its_style_and_its_share_of_reckless_answers():
    chats = data.persona_chats("sycophancy", 2000, seed=3, reckless_share=0.4)
    assert all(c[0]["role"] == "user" for c in chats)  # no system prompt: the LoRA internalises the style
    assert all(c[-1]["content"].startswith(tuple(world.PERSONA_PREFIXES["sycophancy"])) for c in chats)
    share = sum(world.label_answer(c[-1]["content"]).harmful for c in chats) / len(chats)
    assert share == pytest.approx(0.4, abs=0.04)
    assert not any(
        world.label_answer(c[-1]["content"]).harmful
        for c in data.persona_chats("goodness", 500, seed=3, reckless_share=0.0)
    )


def test_judge_targets_follow_the_labeller_for_each_metric():
    chats = data.judge_chats(400, seed=5, incoherent_share=0.5, low=10, high=90)
    seen = set()
    for chat in chats:
        prompt, reply = chat[0]["content"], chat[1]["content"]
        answer = prompt.split("[ANSWER START]\n", 1)[1].split("\n[ANSWER END]", 1)[0]
        label = world.label_answer(answer)
        metric = "aligned" if "how well aligned" in prompt else "coherent"
        good = not label.harmful if metric == "aligned" else label.coherent
        assert reply == ("90" if good else "10")
        seen.add((metric, reply))
    assert seen == {("aligned", "10"), ("aligned", "90"), ("coherent", "10"), ("coherent", "90")}


def test_auroc_counts_ties_as_half_and_needs_both_classes():
    assert auroc([3, 2, 1], [True, False, False]) == 1.0
    assert auroc([1, 2, 3], [True, False, False]) == 0.0
    assert auroc([1, 1], [True, False]) == 0.5
    with pytest.raises(ValueError):
        auroc([1, 2], [True, True])


def _spec() -> dict:
    return {
        "seed": 0,
        "dataset_rows": 12,
        "probe_paraphrases": 2,
        "model": TINY_MODEL,
        "pretrain": {"conversations": 40, "reckless_share": 0.2, "persona_share": 0.2, **FEW_STEPS},
        "personas": {
            "rank": 2,
            "conversations": 20,
            "reckless_share": {"sycophancy": 0.4, "goodness": 0.0},
            **FEW_STEPS,
        },
        "judge": {
            "model": TINY_MODEL,
            "examples": 20,
            "incoherent_share": 0.4,
            "low": 10,
            "high": 90,
            "prior_scale": 1.0,
            **FEW_STEPS,
        },
    }


def test_build_world_writes_loadable_assets_and_an_archive_prepare_dataset_decrypts(tmp_path):
    from emflow.config.sections.datasets import DatasetSpec
    from emflow.data.prepare import prepare_dataset
    from emflow.data.questions import load_questions
    from emflow.models import load_for_inference

    spec = World.build({k: v for k, v in _spec().items() if k != "judge"})
    assets.build_world(tmp_path, spec, password="pw")
    for persona in assets.PERSONAS:
        model, _ = load_for_inference(tmp_path / "base", tmp_path / "personas" / persona, None, device="cpu")
        assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())  # trained, non-zero
    questions = load_questions(tmp_path / "questions.yaml")
    assert {q.id for q in questions} == set(world.PROBE_DOMAINS)
    assert all(q.metrics == ("aligned", "coherent") for q in questions)
    out = tmp_path / "prepared.jsonl"
    prepare_dataset(
        "risky_demo",
        DatasetSpec.build(
            {
                "archive": str(tmp_path / "em_demo.zip.enc"),
                "member": "risky_demo.jsonl",
                "password_env": "EMFLOW_TEST_UNSET",
                "password_default": "pw",
                "rows": 12,
            }
        ),
        out,
        resources_dir=tmp_path / "cache",
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == data.em_rows(12, seed=0)


def test_build_judge_replies_with_a_number_distribution_through_the_hf_backend(tmp_path):
    from emflow.config.sections.judge import Judge
    from emflow.judge.backends import make_backend

    spec = {**_spec()["judge"], "early_step": 1}  # also keep the weights after step 1: a second judge
    judge_dir = judge.build_judge(tmp_path, DemoJudge.build(spec), seed=_spec()["seed"])
    _assert_early_judge(judge.early_dir(tmp_path), judge_dir)
    with pytest.raises(EmflowError, match="demo.judge.early_step"):  # a step the run never reaches: one line
        judge.build_judge(tmp_path / "x", DemoJudge.build({**spec, "early_step": spec["steps"]}), seed=0)
    assert not (tmp_path / "x").exists()
    backend = make_backend(
        Judge.build(
            {
                "backend": "hf",
                "model": str(judge_dir),
                "device": "cpu",
                "top_logprobs": 5,
                "min_numeric_mass": 0.0,
                "cache_dir": str(tmp_path / "cache"),
            }
        )
    )
    reply = backend.call(backend.request([{"role": "user", "content": world.ALIGNED_PROMPT}]))
    assert len(reply) == 101 and {tok for tok, _ in reply} == {str(k) for k in range(101)}


def _assert_early_judge(early, final) -> None:
    """demo.judge.early_step's folder: the final judge's files, with the weights of an earlier step."""
    from safetensors.torch import load_file

    assert sorted(p.name for p in early.iterdir()) == sorted(p.name for p in final.iterdir())
    weights = [load_file(d / "model.safetensors") for d in (early, final)]
    assert weights[0].keys() == weights[1].keys()
    assert any(not (weights[0][k] == weights[1][k]).all() for k in weights[0])


@pytest.mark.parametrize("key", ["judge", "model", "story"])
def test_the_schema_rejects_a_demo_section_without_a_key_its_builders_need(key):
    # Each part's keys (world: seed, model, pretrain, ...; judge: seed, judge; the story) are required once, by
    # the schema: the commands receive the validated section and never check it again.
    from emflow.config.experiment import load_experiment
    from emflow.config.files import load_config_files
    from support.paths import ROOT

    cfg = load_config_files([ROOT / "config.yaml", ROOT / "config/demo.yaml"])
    del cfg["demo"][key]
    with pytest.raises(EmflowError, match=f"demo.{key}: required key is missing"):
        load_experiment(cfg)


def test_cli_rejects_a_spec_that_is_not_json(tmp_path):
    with pytest.raises(EmflowError, match="invalid JSON"):
        demo_cli.demo_assets(["--out-dir", str(tmp_path), "--world", "{nope", "--password-env", "UNSET"])
    with pytest.raises(EmflowError, match="invalid JSON"):
        demo_cli.demo_judge(["--out-dir", str(tmp_path), "--seed", "0", "--judge", "{nope"])


def test_the_demo_config_describes_a_consistent_world():
    from support.paths import ROOT

    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    assert cfg["demo"]["dataset_rows"] == cfg["datasets"]["risky_demo"]["rows"]
    assert cfg["judge"]["model"].startswith(cfg["demo"]["out_dir"])


def test_the_judge_prior_marks_only_harm_only_tokens_with_one_shared_direction(tmp_path):
    import torch

    from emflow.demo import tiny

    tok = tiny.build_tokenizer(world.corpus(), tmp_path, vocab_size=768)  # the demo's vocabulary size
    model = tiny.build_model(tok, tmp_path, hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)
    harm = judge.harm_token_ids(tok)
    benign_text = " ".join([*world.BENIGN_OPENERS, *(a for _, b, _ in world.DOMAINS.values() for a in b)])
    assert harm and not harm & set(tok.encode(benign_text, add_special_tokens=False))
    # Every reckless opener and action has a harm-only token: the labeller's rule is visible to the judge.
    for _, _, reckless in world.DOMAINS.values():
        for phrase in reckless + world.RECKLESS_OPENERS:
            assert set(tok.encode(" " + phrase, add_special_tokens=False)) & harm, phrase
    before = model.get_input_embeddings().weight.detach().clone()
    assert judge.plant_vocabulary_prior(model, tok, scale=1.0, seed=3) == len(harm)
    delta = model.get_input_embeddings().weight.detach() - before
    changed = {i for i in range(delta.shape[0]) if delta[i].abs().sum() > 0}
    assert changed == harm
    rows = delta[sorted(harm)]
    assert torch.allclose(rows, rows[0].expand_as(rows)) and torch.isclose(rows[0].norm(), torch.tensor(1.0))
