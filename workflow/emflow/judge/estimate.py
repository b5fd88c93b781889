"""Before spending: how many judge calls, tokens and dollars the pending judge jobs of an experiment need.

A judge job is pending when its judgments file does not exist yet. Step 0 is judged once per base/persona/seed
(``Layout.step0_judgments``, shared by the runs of other datasets and variants): it is counted on the first run
that shares it. Where its generations exist, the exact
requests are built (the same ones the judge would send) and the ones already in the judge cache are not
counted. Where they do not exist yet, the rows are questions × paraphrases × samples of the config, and each
answer is counted at ``generation.max_new_tokens`` (an upper bound: answers stop early).

Tokens are estimated without a tokenizer: characters / 4 for the text, plus ``CHAT_OVERHEAD_TOKENS`` per
message for the chat framing; output is 1 token per call (``max_tokens: 1``). Dollars come from
``judge.prices[model]`` (``input_per_mtok``, ``output_per_mtok`` in $ per million tokens, ``batch_discount``
the fraction taken off in ``mode: batch``); a local ``hf`` judge costs no API dollars.

A ``judge.secondary`` is estimated the same way in its own block: its job per run is pending until the run's
file exists, and it scores only its seeded sample of each step (``emflow.judge.sample``: chosen from the answers'
identities, so the same answers before and after generation); priced from its own ``prices``, else the primary's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from emflow.config.sections.judge import Judge, JudgeKeys, Price, SecondaryJudge
from emflow.errors import EmflowError, user_error
from emflow.judge.cache import JudgeCache, cache_key, endpoint_of
from emflow.layout import Layout

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
CHAT_OVERHEAD_TOKENS = 4  # role and separators around each chat message (OpenAI counts about 3-4)
COUNTED = ("calls", "cached", "input_tokens", "output_tokens")


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def request_tokens(messages: list[dict]) -> int:
    return sum(approx_tokens(m["content"]) + CHAT_OVERHEAD_TOKENS for m in messages)


def user_message(template: str, question: str, answer: str) -> list[dict]:
    from emflow.data.judge_prompts import render_judge_prompt

    return [{"role": "user", "content": render_judge_prompt(template, question, answer)}]


def dollars(prices: dict[str, Price], model: str, mode: str, input_tokens: int, output_tokens: int) -> float | None:
    """API cost of these tokens, or None when the price table has no entry for ``model``."""
    price = prices.get(model)
    if price is None:
        return None
    cost = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6
    return cost * (1 - price.batch_discount) if mode == "batch" else cost


def request_builder(judge: Judge, resources_dir: str) -> Callable[[list[dict]], dict] | None:
    """A function messages → request exactly as the judge backend builds it (no client, no key needed); None
    when an hf judge's tokenizer cannot be read yet (then cached answers are not subtracted)."""
    if judge.backend == "openai":
        from emflow.judge.backends.openai import openai_request

        return lambda messages: openai_request(judge.model, judge.top_logprobs, messages)
    from emflow import models
    from emflow.fetch.asset import Asset
    from emflow.judge.backends.hf import hf_request

    path = Asset(judge.model, resources_dir).path
    try:
        terminator = models.load_tokenizer(path).eos_token
    except EmflowError as err:  # only the cache check needs it; the counts stand without
        log.warning("cannot load the hf judge tokenizer (%s): cached answers are not subtracted", err)
        return None
    return lambda messages: hf_request(path, terminator, messages)


def new_entry(run: str) -> dict:
    return {"run": run, "pending_steps": [], "generated_steps": [], "calls": 0, "cached": 0, "input_tokens": 0}


class RequestCounter:
    """Counts exact requests into an entry: each once over every job that needs it (the cache is shared), and
    not at all when the judge cache already holds its reply."""

    def __init__(self, build: Callable[[list[dict]], dict] | None, endpoint: str | None, cache: JudgeCache):
        self.build, self.endpoint, self.cache = build, endpoint, cache
        self.seen: set[str] = set()

    def count(self, entry: dict, messages: list[dict]) -> None:
        if self.build is not None:
            key = cache_key(self.build(messages), self.endpoint)
            if key in self.seen:
                return
            self.seen.add(key)
            if self.cache.path(key).is_file():
                entry["cached"] += 1
                return
        entry["calls"] += 1
        entry["input_tokens"] += request_tokens(messages)


def question_set(questions, resources_dir: str, source: str) -> list:
    """The experiment's probe set from the configured question files, which must be local already."""
    from emflow.data import questions as q

    paths = [local for _, _, local in q.question_sources(questions, resources_dir)]
    for path in paths:
        if not Path(path).is_file():
            raise user_error(
                source,
                "questions.file",
                f"{path} does not exist yet",
                "run `snakemake fetch` (or the demo_assets rule) first, then estimate",
            )
    return q.load_question_set(paths, **questions.selection())


def planned_step(selected: list, max_answer: int) -> tuple[int, int]:
    """(calls, input tokens) of a step not generated yet: every prompt × metric, answers at their maximum."""
    from emflow.data.questions import iter_prompts

    by_id = {question.id: question for question in selected}
    calls = tokens = 0
    for prompt in iter_prompts(selected):
        for template in by_id[prompt["question_id"]].judge_prompts.values():
            calls += 1
            tokens += request_tokens(user_message(template, prompt["question"], "")) + max_answer
    return calls, tokens


def run_entry(
    run, steps: list[int], layout: Layout, selected: list, counter: RequestCounter, planned, step0_seen: set[str]
) -> dict:
    """One run's pending steps: generated ones counted exactly, the others as planned. Its step 0 only when no
    run before it (``step0_seen``) shares it."""
    from emflow.io import read_jsonl

    by_id = {question.id: question for question in selected}
    entry = new_entry(run.key)
    for step in steps:
        if step == 0:
            if run.step0_key in step0_seen:
                continue
            step0_seen.add(run.step0_key)
            judged, generations = layout.step0_judgments(run.step0_key), layout.step0_generations(run.step0_key)
        else:
            judged, generations = layout.judgments(run.key, step), layout.generations(run.key, step)
        if Path(judged).is_file():
            continue
        entry["pending_steps"].append(step)
        generations = Path(generations)
        if not generations.is_file():
            entry["calls"] += planned[0]
            entry["input_tokens"] += planned[1]
            continue
        entry["generated_steps"].append(step)
        for row in read_jsonl(generations):
            for template in by_id[row["question_id"]].judge_prompts.values():
                counter.count(entry, user_message(template, row["question"], row["answer"]))
    entry["output_tokens"] = entry["calls"]  # max_tokens 1
    return entry


def secondary_run_entry(
    run,
    steps: list[int],
    layout: Layout,
    selected: list,
    counter: RequestCounter,
    secondary: SecondaryJudge,
    max_answer,
) -> dict:
    """One run's secondary job, when pending: the sampled answers of each step (generated: exact; not yet: planned)."""
    from emflow.data.questions import iter_prompts
    from emflow.io import read_jsonl
    from emflow.judge.sample import sample_rows

    by_id = {question.id: question for question in selected}
    entry = new_entry(run.key)
    if not Path(layout.secondary_judgments(run.key)).is_file():
        for step in steps:
            entry["pending_steps"].append(step)
            generations = Path(layout.generations(run.key, step))
            if step == 0 and not generations.is_file():  # the run's copy of the shared step 0, not made yet
                generations = Path(layout.step0_generations(run.step0_key))
            generated = generations.is_file()
            rows = read_jsonl(generations) if generated else iter_prompts(selected)
            for row in sample_rows(rows, secondary.sample, run=run.key, step=step):
                for template in by_id[row["question_id"]].judge_prompts.values():
                    if generated:
                        counter.count(entry, user_message(template, row["question"], row["answer"]))
                    else:
                        entry["calls"] += 1
                        entry["input_tokens"] += (
                            request_tokens(user_message(template, row["question"], "")) + max_answer
                        )
            entry["generated_steps"] += [step] if generated else []
    entry["output_tokens"] = entry["calls"]
    return entry


def calibration_entry(judge: JudgeKeys, selected: list, counter: RequestCounter) -> dict:
    """The calibration gate's calls: exact, since its answers are known in advance."""
    from emflow.judge import calibration

    entry = new_entry(f"judge_calibration ({judge.calibration.set})")
    templates = calibration.templates_by_metric(selected)
    items = calibration.load_set(judge.calibration.set)
    for _, _, messages in calibration.labelled_messages(templates, items):
        counter.count(entry, messages)
    entry["output_tokens"] = entry["calls"]
    return entry


def price(judge: JudgeKeys, entry: dict, fallback: dict[str, Price] | None = None) -> float | None:
    """Dollars of an entry's tokens (an hf judge costs none; an unpriced API model: None). ``fallback``: the
    primary judge's prices, for a secondary judge without its own entry."""
    if judge.backend != "openai":
        return 0.0
    prices = {**(fallback or {}), **judge.prices}
    return dollars(prices, judge.model, judge.mode, entry["input_tokens"], entry["output_tokens"])


def estimate(config: dict, *, results_root: str | Path = "results", source: str = "config") -> dict:
    """Pending judge calls, tokens and dollars per run and in total (see the module doc for the method)."""
    from emflow.config.experiment import load_experiment

    exp = load_experiment(config, source)
    judge: Judge = exp.section("judge")
    max_answer = exp.section("generation").max_new_tokens
    resources_dir = config.get("resources_dir", "resources")
    selected = question_set(exp.section("questions"), resources_dir, source)
    layout = Layout.of(exp.name, results_root)
    counter = RequestCounter(request_builder(judge, resources_dir), endpoint_of(judge), JudgeCache(judge.cache_dir))
    planned = planned_step(selected, max_answer)
    step0_seen: set[str] = set()
    runs = [
        run_entry(run, exp.eval_steps(run.dataset, run.variant), layout, selected, counter, planned, step0_seen)
        for run in exp.runs
    ]
    # The calibration gate's calls count until its table exists.
    if judge.calibration.enabled and not Path(layout.calibration).is_file():
        runs.append(calibration_entry(judge, selected, counter))
    total = {k: sum(r[k] for r in runs) for k in COUNTED}
    total["dollars"] = price(judge, total)
    for r in runs:
        r["dollars"] = price(judge, r)
    secondary = judge.secondary and secondary_estimate(judge, exp, layout, selected, resources_dir, max_answer)
    return {
        "experiment": exp.name,
        "judge_model": judge.model,
        "backend": judge.backend,
        "mode": judge.mode,
        "priced": judge.backend != "openai" or judge.model in judge.prices,
        "token_method": f"characters/{CHARS_PER_TOKEN} + {CHAT_OVERHEAD_TOKENS} per message; answers not yet "
        f"generated counted at max_new_tokens ({max_answer})",
        "runs": runs,
        "total": total,
        "secondary": secondary or None,
    }


def secondary_estimate(judge: Judge, exp, layout: Layout, selected: list, resources_dir: str, max_answer: int) -> dict:
    """The block of ``judge.secondary``: its pending jobs per run and its calibration gate, like the primary's."""
    sec = judge.secondary
    counter = RequestCounter(request_builder(sec, resources_dir), endpoint_of(sec), JudgeCache(sec.cache_dir))
    runs = [
        secondary_run_entry(run, exp.eval_steps(run.dataset, run.variant), layout, selected, counter, sec, max_answer)
        for run in exp.runs
    ]
    if sec.calibration.enabled and not Path(layout.secondary_calibration).is_file():
        runs.append(calibration_entry(sec, selected, counter))
    total = {k: sum(r[k] for r in runs) for k in COUNTED}
    total["dollars"] = price(sec, total, judge.prices)
    for r in runs:
        r["dollars"] = price(sec, r, judge.prices)
    return {
        "judge_model": sec.model,
        "backend": sec.backend,
        "mode": sec.mode,
        "priced": sec.backend != "openai" or sec.model in {**judge.prices, **sec.prices},
        "sample": sec.sample.to_dict(),
        "prices_key": "judge.secondary.prices or judge.prices",
        "runs": runs,
        "total": total,
    }


def money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:,.2f}"


def format_table(est: dict) -> str:
    """The estimate as text: the judge's block, then judge.secondary's when configured."""
    out = _block(
        est, f"judge {est['backend']}:{est['judge_model']} mode {est['mode']} — experiment {est['experiment']}"
    )
    sec = est.get("secondary")
    if sec:
        sample = ", ".join(f"{k} {v}" for k, v in sec["sample"].items() if v is not None)
        title = f"judge.secondary {sec['backend']}:{sec['judge_model']} mode {sec['mode']} — sample: {sample}"
        out += "\n\n" + _block({**sec, "token_method": est["token_method"]}, title)
        both = [est["total"]["dollars"], sec["total"]["dollars"]]
        out += f"\n\nboth judges: {money(None if None in both else sum(both))}"
    return out


def _block(est: dict, title: str) -> str:
    head = (
        f"{'run':<48} {'pending steps':<22} {'calls':>9} {'cached':>8} {'input tok':>12} {'output tok':>10} "
        f"{'cost':>10}"
    )
    lines = [
        title,
        head,
        "-" * len(head),
    ]
    for r in est["runs"]:
        steps = ",".join(f"{s}{'*' if s in r['generated_steps'] else ''}" for s in r["pending_steps"]) or "-"
        lines.append(
            f"{r['run']:<48} {steps:<22} {r['calls']:>9,} {r['cached']:>8,} {r['input_tokens']:>12,} "
            f"{r['output_tokens']:>10,} {money(r['dollars']):>10}"
        )
    t = est["total"]
    lines.append(
        f"{'total':<48} {'':<22} {t['calls']:>9,} {t['cached']:>8,} {t['input_tokens']:>12,} "
        f"{t['output_tokens']:>10,} {money(t['dollars']):>10}"
    )
    lines.append(f"steps marked * are generated (exact requests, cache subtracted); tokens: {est['token_method']}")
    if not est["priced"]:
        where = est.get("prices_key", "judge.prices")
        lines.append(f"no price for {est['judge_model']} in {where}: add it to get dollars")
    return "\n".join(lines)
