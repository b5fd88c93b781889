# Judge: every answer scored on each metric of its question's judge_prompts (aligned, coherent, ...), from the
# judge's logprobs over 0-100. API keys come from the environment variable named in config, never from here.
# The tracked params hold only the configured backend's keys (JUDGE_PARAMS); the speed settings reach the
# command outside them ($EMFLOW_JUDGE_RUNTIME, see common.smk), so tuning them reruns nothing.


# An API judge needs the internet, which a cluster's compute nodes usually lack: with run_on login (the default)
# it is a local rule and runs beside snakemake on the login node; a local hf judge is always a (GPU) job. The
# calibration gate calls the same judge, so it runs where the judge runs.
if JUDGE.backend != "hf" and JUDGE.run_on == "login":

    localrules:
        judge,
        judge_calibration,


# The gate: the judge scores a labelled calibration set first; every judge job waits for (and needs) its table.
rule judge_calibration:
    input:
        unpack(judge_calibration_inputs),
    output:
        L.calibration,
    log:
        L.log("judge", "judge_calibration"),
    params:
        judge=JUDGE_PARAMS,
        judge_identity=JUDGE_IDENTITY,
        calibration=JUDGE.calibration.to_json(),
    conda:
        ENV
    shell:
        "emflow judge_calibration --questions {input.questions} --out {output} --params {params.judge:q}"
        ' --runtime "$EMFLOW_JUDGE_RUNTIME" --calibration {params.calibration:q} > {log} 2>&1'


rule judge:
    input:
        unpack(judge_inputs),
    output:
        L.judgments(),
    log:
        L.log("judge", f"{RUN}/step-{{step}}"),
    benchmark:
        f"{L.logs}/judge/{RUN}/step-{{step}}.benchmark.tsv"
    params:
        judge=JUDGE_PARAMS,
        judge_identity=JUDGE_IDENTITY,
        identity=run_identity,
    conda:
        ENV
    shell:
        "emflow judge --generations {input.generations} --questions {input.questions}"
        ' --out {output} --params {params.judge:q} --runtime "$EMFLOW_JUDGE_RUNTIME" > {log} 2>&1'
