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


def judge_params():
    """What is scored and how: only the keys of the configured backend (an overlay switching the demo's hf judge
    to an API cannot delete the inherited hf-only keys; they mean nothing to the new backend)."""
    j = {k: v for k, v in backend_params(C["judge"]).items() if k not in JUDGE_RUNTIME_KEYS}
    if j["backend"] == "hf":
        j["model"] = asset(j["model"]).path
    return to_json(j)


# Speed-only settings, kept out of the tracked params: tuning them reruns nothing.
JUDGE_RUNTIME = to_json({k: v for k, v in backend_params(C["judge"]).items() if k in JUDGE_RUNTIME_KEYS})


def judge_model_input():
    return {"model": asset(C["judge"]["model"]).snapshot_dir} if C["judge"]["backend"] == "hf" else {}


CALIBRATION = C["judge"].get("calibration", {"set": "none"})
CALIBRATION_CSV = f"{R}/judge_calibration.csv"


def calibration_input():
    return {"calibration": CALIBRATION_CSV} if CALIBRATION["set"] != "none" else {}


def judge_inputs(w):
    inputs = {"generations": f"{R}/generations/{RUN}/step-{{step}}.jsonl".format(**w), "questions": questions_file()}
    return {**inputs, **judge_model_input(), **calibration_input()}


if C["judge"]["backend"] != "hf" and C["judge"].get("run_on", "login") == "login":

    localrules:
        judge_calibration,


# The gate: the judge scores a labelled calibration set first; every judge job waits for (and needs) its table.
rule judge_calibration:
    input:
        unpack(lambda w: {"questions": questions_file(), **judge_model_input()}),
    output:
        CALIBRATION_CSV,
    log:
        f"{LOGS}/judge_calibration.log",
    params:
        judge=judge_params(),
        judge_identity=IDENTITY["judge"],
        calibration=to_json(CALIBRATION),
    conda:
        ENV
    shell:
        "{EMFLOW} judge-calibration --questions {input.questions} --out {output} --params {params.judge:q}"
        " --runtime {JUDGE_RUNTIME:q} --calibration {params.calibration:q} > {log} 2>&1"


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
        judge_identity=IDENTITY["judge"],
        identity=run_identity,
    conda:
        ENV
    shell:
        "{EMFLOW} judge --generations {input.generations} --questions {input.questions}"
        " --out {output} --params {params.judge:q} --runtime {JUDGE_RUNTIME:q} > {log} 2>&1"
