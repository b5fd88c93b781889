# Judge: every answer scored on each metric of its question's judge_prompts (aligned, coherent, ...), from the
# judge's logprobs over 0-100. API keys come from the environment variable named in config, never from here.
# The tracked params hold only the configured backend's keys (JUDGE_PARAMS); the speed settings reach the
# command outside them ($EMFLOW_JUDGE_RUNTIME, see common.smk), so tuning them reruns nothing.


# An API judge needs the internet, which a cluster's compute nodes usually lack: with run_on login (the default)
# it is a local rule and runs beside snakemake on the login node; with run_on job it is submitted as an internet
# job (profiles/leonardo: the serial partition, see judge_resources); a local hf judge is always a (GPU) job.
# The calibration gate calls the same judge, so it runs where the judge runs.
if JUDGE.backend != "hf" and JUDGE.run_on == "login":

    localrules:
        judge,
        judge_step0,
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
    resources:
        **judge_resources(JUDGE, calibration_runtime),
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
    wildcard_constraints:
        step=CHECKPOINT_STEP,
    params:
        judge=JUDGE_PARAMS,
        judge_identity=JUDGE_IDENTITY,
        identity=run_identity,
    resources:
        **judge_resources(JUDGE, judge_runtime),
    conda:
        ENV
    shell:
        "emflow judge --generations {input.generations} --questions {input.questions}"
        ' --out {output} --params {params.judge:q} --runtime "$EMFLOW_JUDGE_RUNTIME" > {log} 2>&1'


# Step 0 is judged once per <base>/<persona>/seed<N>, like it is generated (generate.smk), by the same command.
rule judge_step0:
    input:
        unpack(step0_judge_inputs),
    output:
        L.step0_judgments(),
    log:
        L.log("judge", f"step0/{STEP0}"),
    benchmark:
        f"{L.logs}/judge/step0/{STEP0}.benchmark.tsv"
    params:
        judge=JUDGE_PARAMS,
        judge_identity=JUDGE_IDENTITY,
        identity=run_identity,
    resources:
        **judge_resources(JUDGE, judge_runtime),
    conda:
        ENV
    shell:
        "emflow judge --generations {input.generations} --questions {input.questions}"
        ' --out {output} --params {params.judge:q} --runtime "$EMFLOW_JUDGE_RUNTIME" > {log} 2>&1'


localrules:
    share_step0_judgments,


# Each run's step-0 judgments are a copy of its shared ones (and its answers, share_step0_generations in
# generate.smk), so every reader of a run's files is unchanged; a copy, not a link, so each file's time is its own.
rule share_step0_judgments:
    input:
        L.step0_judgments(),
    output:
        L.judgments(step=0),
    log:
        L.log("judge", f"{RUN}/share_step0"),
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"


# judge.secondary: a second judge scores a seeded sample of every step's answers (judge.secondary.sample), one job
# per run, for tables/judge_agreement.csv. Its own rules and files, so adding or changing it reruns only these jobs
# and the analysis, never the primary judgments; the same cache, retries and calibration gate, placed like the
# primary judge's rules by its own backend and run_on (judge_resources; a local rule with an API judge on login).
if SECONDARY:
    if SECONDARY.backend != "hf" and SECONDARY.run_on == "login":

        localrules:
            judge_secondary,
            judge_calibration_secondary,

    rule judge_calibration_secondary:
        input:
            unpack(secondary_calibration_inputs),
        output:
            L.secondary_calibration,
        log:
            L.log("judge", "judge_calibration_secondary"),
        params:
            judge=SECONDARY_PARAMS,
            judge_identity=SECONDARY_IDENTITY,
            calibration=SECONDARY.calibration.to_json(),
        resources:
            **judge_resources(SECONDARY, calibration_runtime),
        conda:
            ENV
        shell:
            "emflow judge_calibration_secondary --questions {input.questions} --out {output}"
            ' --params {params.judge:q} --runtime "$EMFLOW_SECONDARY_RUNTIME"'
            " --calibration {params.calibration:q} > {log} 2>&1"

    rule judge_secondary:
        input:
            unpack(secondary_inputs),
        output:
            L.secondary_judgments(),
        log:
            L.log("judge", f"{RUN}/secondary"),
        benchmark:
            f"{L.logs}/judge/{RUN}/secondary.benchmark.tsv"
        params:
            judge=SECONDARY_PARAMS,
            judge_identity=SECONDARY_IDENTITY,
            sample=SECONDARY_SAMPLE,
            identity=run_identity,
        resources:
            **judge_resources(SECONDARY, secondary_runtime),
        conda:
            ENV
        shell:
            "emflow judge_secondary --generations {input.generations} --questions {input.questions}"
            ' --out {output} --params {params.judge:q} --runtime "$EMFLOW_SECONDARY_RUNTIME"'
            " --sample {params.sample:q} > {log} 2>&1"
