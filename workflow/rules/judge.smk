# Judge: every answer scored on each metric of its question's judge_prompts (aligned, coherent, ...), from the
# judge's logprobs over 0-100. API keys come from the environment variable named in config, never from here.


# An API judge needs the internet, which a cluster's compute nodes usually lack: with run_on login (the default)
# it is a local rule and runs beside snakemake on the login node; a local hf judge is always a (GPU) job.
if C["judge"]["backend"] != "hf" and C["judge"].get("run_on", "login") == "login":

    localrules:
        judge,


# Settings that change how fast or where judging runs, never a score: passed outside the rule's params (which
# Snakemake tracks), so tuning them reruns nothing. Prices are read by `emflow estimate` only.
JUDGE_RUNTIME_KEYS = ("concurrency", "max_retries", "timeout_s", "backoff_base_s", "backoff_max_s", "batch_poll_s",
                      "batch_max_requests", "batch_size")
JUDGE_RUNTIME = json.dumps({k: v for k, v in C["judge"].items() if k in JUDGE_RUNTIME_KEYS})


def judge_params():
    j = {k: v for k, v in C["judge"].items() if k not in (*JUDGE_RUNTIME_KEYS, "prices", "run_on")}
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
        " --out {output} --params {params.judge:q} --runtime {JUDGE_RUNTIME:q} > {log} 2>&1"
