# Generation: answers to the probe questions at step 0 (base + persona, no EM) and at every EM checkpoint.
# generation.group_checkpoints picks how jobs are cut; either way the rule is `generate` and writes the same
# generations/<run>/step-<step>.jsonl files, and only one rule can produce each file:
# - false (default): one job per step, so a step is answered as soon as its checkpoint exists;
# - true: one job per run writes every step's file, loading the base and persona once and swapping only the EM
#   adapter. Datasets with different checkpoint steps need one rule each (outputs are fixed per rule): the
#   first is `generate`, the others `generate_<dataset>`.


def generation_params():
    # The grouping decides how jobs are cut, not what is generated: kept out of the job's parameters.
    return to_json({k: v for k, v in C["generation"].items() if k != "group_checkpoints"})


def generate_inputs(w):
    inputs = {**asset_inputs(w), "questions": questions_file()}
    if int(w.step) > 0:
        inputs["run"] = f"{R}/runs/{RUN}".format(**w)
    return inputs


def adapter_arg(w):
    return f"{R}/runs/{RUN}/checkpoint-{{step}}".format(**w) if int(w.step) > 0 else "none"


if not C["generation"].get("group_checkpoints", False):

    rule generate:
        input:
            unpack(generate_inputs),
        output:
            f"{R}/generations/{RUN}/step-{{step}}.jsonl",
        log:
            f"{LOGS}/generate/{RUN}/step-{{step}}.log",
        benchmark:
            f"{LOGS}/generate/{RUN}/step-{{step}}.benchmark.tsv"
        params:
            base=lambda w: model_asset(w).path,
            persona=persona_arg,
            adapter=adapter_arg,
            select=resolved_select(),
            gen=generation_params(),
            identity=run_identity,
        conda:
            ENV
        shell:
            "{EMFLOW} generate --base {params.base} --persona {params.persona} --adapter {params.adapter}"
            " --questions {input.questions} --select {params.select:q} --out {output} --params {params.gen:q}"
            " --seed {wildcards.seed} --step {wildcards.step} > {log} 2>&1"

else:

    def run_generate_inputs(w):
        return {**asset_inputs(w), "questions": questions_file(), "run": f"{R}/runs/{RUN}".format(**w)}

    def datasets_by_steps():
        """{eval steps: [datasets]} over the datasets that runs use, in first-use order."""
        groups = {}
        for dataset in dict.fromkeys(r.dataset for r in EXP.runs):
            groups.setdefault(tuple(EXP.eval_steps(dataset)), []).append(dataset)
        return groups

    for i, (steps, datasets) in enumerate(datasets_by_steps().items()):

        rule:
            name:
                "generate" if i == 0 else f"generate_{datasets[0]}"
            input:
                unpack(run_generate_inputs),
            output:
                [f"{R}/generations/{RUN}/step-{s}.jsonl" for s in steps],
            log:
                f"{LOGS}/generate/{RUN}/steps.log",
            benchmark:
                f"{LOGS}/generate/{RUN}/steps.benchmark.tsv"
            wildcard_constraints:
                dataset=_alternatives(datasets),
            params:
                base=lambda w: model_asset(w).path,
                persona=persona_arg,
                run=lambda w: f"{R}/runs/{RUN}".format(**w),
                out=lambda w: f"{R}/generations/{RUN}".format(**w),
                steps=",".join(map(str, steps)),
                select=resolved_select(),
                gen=generation_params(),
                identity=run_identity,
            conda:
                ENV
            shell:
                "{EMFLOW} generate-run --base {params.base} --persona {params.persona} --run-dir {params.run}"
                " --steps {params.steps} --questions {input.questions} --select {params.select:q}"
                " --out-dir {params.out} --params {params.gen:q} --seed {wildcards.seed} > {log} 2>&1"
