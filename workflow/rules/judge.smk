# Judge: every answer scored on each metric of its question's judge_prompts (aligned, coherent, ...), from the
# judge's logprobs over 0-100. API keys come from the environment variable named in config, never from here.


def judge_params():
    j = dict(C["judge"])
    if j["backend"] == "hf":
        j["model"] = asset(j["model"]).path
    return json.dumps(j)


def judge_inputs(w):
    inputs = {"generations": f"{R}/generations/{RUN}/step-{{step}}.jsonl".format(**w), "questions": questions_file()}
    if C["judge"]["backend"] == "hf":
        inputs["model"] = asset(C["judge"]["model"]).snapshot_dir
    return inputs


rule judge:
    input:
        unpack(judge_inputs),
    output:
        f"{R}/judgments/{RUN}/step-{{step}}.jsonl",
    log:
        f"{LOGS}/judge/{RUN}/step-{{step}}.log",
    benchmark:
        f"{LOGS}/judge/{RUN}/step-{{step}}.benchmark.tsv"
    params:
        judge=judge_params(),
    conda:
        ENV
    shell:
        "{EMFLOW} judge --generations {input.generations} --questions {input.questions}"
        " --out {output} --params {params.judge:q} > {log} 2>&1"
