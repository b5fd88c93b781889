"""Before spending: how many judge calls, tokens and dollars the pending judge jobs of an experiment need.

A judge job is pending when its judgments file does not exist yet. Where its generations exist, the exact
requests are built (the same ones the judge would send) and the ones already in the judge cache are not
counted. Where they do not exist yet, the rows are questions × paraphrases × samples of the config, and each
answer is counted at ``generation.max_new_tokens`` (an upper bound: answers stop early).

Tokens are estimated without a tokenizer: characters / 4 for the text, plus ``CHAT_OVERHEAD_TOKENS`` per
message for the chat framing; output is 1 token per call (``max_tokens: 1``). Dollars come from
``judge.prices[model]`` (``input_per_mtok``, ``output_per_mtok`` in $ per million tokens, ``batch_discount``
the fraction taken off in ``mode: batch``); a local ``hf`` judge costs no API dollars.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from emflow.errors import EmflowError, user_error
from emflow.fetch.hub import question_sources

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
CHAT_OVERHEAD_TOKENS = 4  # role and separators around each chat message (OpenAI counts about 3-4)


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def request_tokens(messages: list[dict]) -> int:
    return sum(approx_tokens(m["content"]) + CHAT_OVERHEAD_TOKENS for m in messages)


def dollars(prices: dict | None, model: str, mode: str, input_tokens: int, output_tokens: int) -> float | None:
    """API cost of these tokens, or None when the price table has no entry for ``model``."""
    price = (prices or {}).get(model)
    if price is None:
        return None
    cost = (input_tokens * price["input_per_mtok"] + output_tokens * price["output_per_mtok"]) / 1e6
    return cost * (1 - price.get("batch_discount", 0.0)) if mode == "batch" else cost


def _request_builder(judge: dict, resources_dir: str):
    """A function messages → request exactly as the judge backend builds it (no client, no key needed)."""
    from emflow.judge import backends as judge_backends

    if judge["backend"] == "openai":
        return lambda messages: judge_backends.openai_request(judge["model"], judge["top_logprobs"], messages)
    from emflow import models
    from emflow.fetch.hub import Asset

    path = Asset(judge["model"], resources_dir).path
    try:
        terminator = models.load_tokenizer(path).eos_token
    except EmflowError as err:  # only the cache check needs it; the counts stand without
        log.warning("cannot load the hf judge tokenizer (%s): cached answers are not subtracted", err)
        return None
    return lambda messages: judge_backends.hf_request(path, terminator, messages)


def _new_entry(run: str) -> dict:
    return {"run": run, "pending_steps": [], "generated_steps": [], "calls": 0, "cached": 0, "input_tokens": 0}


def estimate(config: dict, *, results_root: str | Path = "results", source: str = "config") -> dict:
    """Pending judge calls, tokens and dollars per run and in total (see the module doc for the method)."""
    from emflow.config.experiment import load_experiment
    from emflow.data import questions as q
    from emflow.io import read_jsonl
    from emflow.judge import calibration as judge_calibration
    from emflow.judge.cache import JudgeCache, cache_key, endpoint_of

    exp = load_experiment(config, source)
    c = exp.config
    judge = c["judge"]
    paths = [local for _, _, local in question_sources(c)]
    for path in paths:
        if not Path(path).is_file():
            raise user_error(
                source,
                "questions.file",
                f"{path} does not exist yet",
                "run `snakemake fetch` (or the demo_assets rule) first, then estimate",
            )
    select = {k: c["questions"].get(k) for k in ("ids", "samples_per_paraphrase", "metrics")}
    selected = q.load_question_set(paths, **select)
    by_id = {qq.id: qq for qq in selected}
    max_answer = int(c["generation"]["max_new_tokens"])
    resources_dir = c.get("resources_dir", "resources")
    build = _request_builder(judge, resources_dir)
    endpoint = endpoint_of(judge)
    cache = JudgeCache(judge["cache_dir"])
    root = Path(results_root) / exp.name
    mode = judge.get("mode", "online")

    # A planned step: every selected prompt × metric, the answer at its maximum length.
    planned_calls = planned_tokens = 0
    for prompt in q.iter_prompts(selected):
        for template in by_id[prompt["question_id"]].judge_prompts.values():
            text = q.render_judge_prompt(template, prompt["question"], "")
            planned_calls += 1
            planned_tokens += request_tokens([{"role": "user", "content": text}]) + max_answer

    runs, seen = [], set()

    def count(entry: dict, messages: list[dict]) -> None:
        """One exact request: counted once for every job that needs it (the cache is shared), unless cached."""
        if build is not None:
            key = cache_key(build(messages), endpoint)
            if key in seen:
                return
            seen.add(key)
            if cache.path(key).is_file():
                entry["cached"] += 1
                return
        entry["calls"] += 1
        entry["input_tokens"] += request_tokens(messages)

    for run in exp.runs:
        entry = _new_entry(run.key)
        for step in exp.eval_steps(run.dataset):
            if (root / "judgments" / run.key / f"step-{step}.jsonl").is_file():
                continue
            entry["pending_steps"].append(step)
            gens = root / "generations" / run.key / f"step-{step}.jsonl"
            if not gens.is_file():
                entry["calls"] += planned_calls
                entry["input_tokens"] += planned_tokens
                continue
            entry["generated_steps"].append(step)
            for row in read_jsonl(gens):
                for template in by_id[row["question_id"]].judge_prompts.values():
                    count(
                        entry,
                        [{"role": "user", "content": q.render_judge_prompt(template, row["question"], row["answer"])}],
                    )
        entry["output_tokens"] = entry["calls"]  # max_tokens 1
        runs.append(entry)

    # The calibration gate's calls, until its table exists: exact, since its answers are known in advance.
    calibration = judge.get("calibration", {"set": "none"})
    if calibration["set"] != "none" and not (root / "judge_calibration.csv").is_file():
        entry = _new_entry(f"judge_calibration ({calibration['set']})")
        templates = judge_calibration.templates_by_metric(selected)
        items = judge_calibration.load_set(calibration["set"])
        for _, _, messages in judge_calibration.labelled_messages(templates, items):
            count(entry, messages)
        entry["output_tokens"] = entry["calls"]
        runs.append(entry)

    total = {k: sum(r[k] for r in runs) for k in ("calls", "cached", "input_tokens", "output_tokens")}
    api = judge["backend"] == "openai"
    total["dollars"] = (
        dollars(judge.get("prices"), judge["model"], mode, total["input_tokens"], total["output_tokens"])
        if api
        else 0.0
    )
    for r in runs:
        r["dollars"] = (
            dollars(judge.get("prices"), judge["model"], mode, r["input_tokens"], r["output_tokens"]) if api else 0.0
        )
    return {
        "experiment": exp.name,
        "judge_model": judge["model"],
        "backend": judge["backend"],
        "mode": mode,
        "priced": (not api) or judge["model"] in (judge.get("prices") or {}),
        "token_method": f"characters/{CHARS_PER_TOKEN} + {CHAT_OVERHEAD_TOKENS} per message; answers not yet "
        f"generated counted at max_new_tokens ({max_answer})",
        "runs": runs,
        "total": total,
    }


def format_table(est: dict) -> str:
    def money(x: float | None) -> str:
        return "n/a" if x is None else f"${x:,.2f}"

    head = f"{'run':<48} {'pending steps':<22} {'calls':>9} {'cached':>8} {'input tok':>12} {'output tok':>10} {'cost':>10}"
    lines = [
        f"judge {est['backend']}:{est['judge_model']} mode {est['mode']} — experiment {est['experiment']}",
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
        lines.append(f"no price for {est['judge_model']} in judge.prices: add it to get dollars")
    return "\n".join(lines)


def cli(argv: list[str]) -> None:
    from emflow.config.experiment import load_config_files

    ap = argparse.ArgumentParser(prog="emflow estimate", description=__doc__.splitlines()[0])
    ap.add_argument("configfiles", nargs="+", help="config.yaml, then overlays (merged like --configfile)")
    ap.add_argument("--results", default="results", help="the results root (default: results)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    est = estimate(load_config_files(a.configfiles), results_root=a.results, source=" + ".join(a.configfiles))
    print(json.dumps(est, indent=2) if a.json else format_table(est))
