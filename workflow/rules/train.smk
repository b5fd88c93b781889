# Stacked-LoRA training: persona LoRA frozen and active, a new EM LoRA trained on top. One job per run; it saves
# the EM adapter at exactly the steps the DAG expects (resolved from the config before anything runs).


def train_inputs(w):
    return {
        **asset_inputs(w),
        "train": f"{R}/datasets/{w.dataset}.train.jsonl",
        "eval": f"{R}/datasets/{w.dataset}.eval.jsonl",
    }


rule train:
    input:
        unpack(train_inputs),
    output:
        directory(f"{R}/runs/{RUN}"),
    log:
        f"{LOGS}/train/{RUN}.log",
    benchmark:
        f"{LOGS}/train/{RUN}.benchmark.tsv"
    params:
        base=lambda w: model_asset(w).path,
        persona=persona_arg,
        # The config's specs (hf:OWNER/NAME@REVISION) are recorded in every checkpoint.
        base_spec=lambda w: C["models"][w.base],
        persona_spec=lambda w: C["personas"][w.persona] or "none",
        recipe=to_json(C["training"]),
        identity=run_identity,
        steps=lambda w: ",".join(map(str, EXP.steps(w.dataset))),
        # Resumable trainer state lives outside the declared output, which Snakemake clears before a rerun.
        state=lambda w: f"{R}/train_state/{RUN}".format(**w),
        # eval_rows: 0 leaves an empty eval split: train without an eval set then.
        eval=lambda w, input: input.eval if C["datasets"][w.dataset].get("eval_rows", 0) > 0 else "none",
    conda:
        ENV
    shell:
        "{EMFLOW} train --base {params.base} --persona {params.persona} --train {input.train}"
        " --eval {params.eval} --out-dir {output} --state-dir {params.state} --recipe {params.recipe:q}"
        " --steps {params.steps} --seed {wildcards.seed} --base-spec {params.base_spec:q}"
        " --persona-spec {params.persona_spec:q} > {log} 2>&1"
