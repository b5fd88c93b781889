# Stacked-LoRA training: persona LoRA frozen and active, a new EM LoRA trained on top. One job per run; it saves
# the EM adapter at exactly the steps the DAG expects (resolved from the config before anything runs), and at the
# geometry-only steps (checkpoints.analysis_every) under the run folder's geometry/, which only the analysis reads.


rule train:
    input:
        unpack(train_inputs),
    output:
        directory(L.run_dir()),
    log:
        L.log("train", RUN),
    benchmark:
        f"{L.logs}/train/{RUN}.benchmark.tsv"
    params:
        base=base_path,
        persona=persona_path,
        base_spec=base_spec,
        persona_spec=persona_spec,
        # the persona adapter's config key and base_mismatch, for the check that it fits the base
        persona_fit=persona_fit_args,
        recipe_field=recipe_field,
        training=training_params,
        identity=run_identity,
        steps=checkpoint_steps,
        analysis_steps=analysis_steps,
        # Resumable trainer state lives outside the declared output, which Snakemake clears before a rerun.
        state=L.train_state(),
        eval=eval_arg,
    resources:
        **job_resources("gpu", train_runtime),
    conda:
        ENV
    shell:
        "emflow train --base {params.base} --persona {params.persona} --train {input.train}"
        " --eval {params.eval} --out-dir {output} --state-dir {params.state} --training {params.training:q}"
        " --steps {params.steps} --analysis-steps {params.analysis_steps} --seed {wildcards.seed}"
        " --base-spec {params.base_spec:q} --persona-spec {params.persona_spec:q}"
        " {params.persona_fit} --recipe-field {params.recipe_field} > {log} 2>&1"
