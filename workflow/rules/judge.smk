# Judge: every answer scored on each metric of its question's judge_prompts (aligned, coherent, ...), from the
# judge's logprobs over 0-100. API keys come from the environment variable named in config, never from here.


# An API judge needs the internet, which a cluster's compute nodes usually lack: with run_on login (the default)
# it is a local rule and runs beside snakemake on the login node; a local hf judge is always a (GPU) job.
if C["judge"]["backend"] != "hf" and C["judge"].get("run_on", "login") == "login":

    localrules:
        judge,


def judge_params():
    # Prices and placement do not change a score: kept out, so editing them reruns nothing.
    j = {k: v for k, v in C["judge"].items() if k not in ("prices", "run_on")}
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
