# Generation: answers to the probe questions at step 0 (base + persona, no EM) and at every EM checkpoint.


def generate_inputs(w):
    inputs = {**asset_inputs(w), "questions": questions_file()}
    if int(w.step) > 0:
        inputs["run"] = f"{R}/runs/{RUN}".format(**w)
    return inputs


def adapter_arg(w):
    return f"{R}/runs/{RUN}/checkpoint-{{step}}".format(**w) if int(w.step) > 0 else "none"


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
        select=question_select(),
        gen=json.dumps(C["generation"]),
    conda:
        ENV
    shell:
        "{EMFLOW} generate --base {params.base} --persona {params.persona} --adapter {params.adapter}"
        " --questions {input.questions} --select {params.select:q} --out {output} --params {params.gen:q}"
        " --seed {wildcards.seed} --step {wildcards.step} > {log} 2>&1"
