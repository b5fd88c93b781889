# Generation: answers to the probe questions at step 0 (base + persona, no EM) and at every EM checkpoint.
# Step 0 depends only on base, persona and seed, so `generate_step0` answers it once per <base>/<persona>/seed<N>
# (step0/generations/, shared by every dataset and recipe variant of those) and `share_step0_generations` copies
# it into each run (its judgments: judge.smk). generation.group_checkpoints picks how the checkpoint jobs are cut;
# either way the rule is `generate`, runs `emflow generate` and writes the same generations/<run>/step-<step>.jsonl
# files, and only one rule can produce each file:
# - false (default): one job per checkpoint (--steps <step>), answered as soon as its checkpoint exists;
# - true: one job per run (--steps 5,10,...) writes every checkpoint's file, loading the base and persona once and
#   swapping only the EM adapter. Datasets (or recipe variants) with different checkpoint steps need one rule each
#   (outputs are fixed per rule): the first is `generate`, the others `generate_<dataset>[_<variant>]`.

GENERATE_CMD = (
    "emflow generate --base {params.base} --persona {params.persona} --run-dir {params.run_dir}"
    " --steps {params.steps} --out {output} --questions {input.questions} --select {params.select:q}"
    " --params {params.gen:q} --seed {wildcards.seed} --base-spec {params.base_spec:q} {params.persona_fit}"
    " > {log} 2>&1"
)


rule generate_step0:
    input:
        unpack(step0_generate_inputs),
    output:
        L.step0_generations(),
    log:
        L.log("generate", f"step0/{STEP0}"),
    benchmark:
        f"{L.logs}/generate/step0/{STEP0}.benchmark.tsv"
    params:
        base=base_path,
        persona=persona_path,
        run_dir="none",
        steps="0",
        select=RESOLVED_SELECT,
        gen=GENERATION_PARAMS,
        identity=run_identity,
        base_spec=base_spec,
        persona_fit=persona_fit_args,
    resources:
        **job_resources("gpu", step0_runtime),
    conda:
        ENV
    shell:
        GENERATE_CMD


localrules:
    share_step0_generations,


# The run's copy of its step-0 answers: its own rule, so a new primary judge (which rewrites the step-0
# judgments) leaves the answers, and so judge.secondary, alone.
rule share_step0_generations:
    input:
        L.step0_generations(),
    output:
        L.generations(step=0),
    log:
        L.log("generate", f"{RUN}/share_step0"),
    conda:
        ENV
    shell:
        "cp {input} {output} > {log} 2>&1"


if not GENERATION.group_checkpoints:

    rule generate:
        input:
            unpack(run_generate_inputs),
        output:
            L.generations(),
        log:
            L.log("generate", f"{RUN}/step-{{step}}"),
        benchmark:
            f"{L.logs}/generate/{RUN}/step-{{step}}.benchmark.tsv"
        wildcard_constraints:
            step=CHECKPOINT_STEP,
        params:
            base=base_path,
            persona=persona_path,
            run_dir=L.run_dir(),
            steps="{step}",
            select=RESOLVED_SELECT,
            gen=GENERATION_PARAMS,
            identity=run_identity,
            base_spec=base_spec,
            persona_fit=persona_fit_args,
        resources:
            **job_resources("gpu", generate_runtime),
        conda:
            ENV
        shell:
            GENERATE_CMD

else:

    for i, (variant, steps, datasets) in enumerate(datasets_by_steps()):  # steps: the checkpoints, no step 0

        rule:
            name:
                "generate" if i == 0 else f"generate_{datasets[0]}" + (f"_{variant}" if variant != "default" else "")
            input:
                unpack(run_generate_inputs),
            output:
                [L.generations(step=s) for s in steps],
            log:
                L.log("generate", f"{RUN}/steps"),
            benchmark:
                f"{L.logs}/generate/{RUN}/steps.benchmark.tsv"
            wildcard_constraints:
                dataset=_alternatives(datasets),
                variant=re.escape(variant),
            params:
                base=base_path,
                persona=persona_path,
                run_dir=L.run_dir(),
                steps=",".join(map(str, steps)),
                select=RESOLVED_SELECT,
                gen=GENERATION_PARAMS,
                identity=run_identity,
                base_spec=base_spec,
                persona_fit=persona_fit_args,
            resources:
                **job_resources("gpu", generate_runtime),
            conda:
                ENV
            shell:
                GENERATE_CMD
