# The probe set: the configured question file(s), selected by id (variants excluded unless named), with the
# sample count and judged metrics from config, written once as one file that generate and judge both read.


rule resolve_questions:
    input:
        [local for _, _, local in question_sources(C)],
    output:
        f"{R}/questions.yaml",
    log:
        f"{LOGS}/questions.log",
    params:
        select=question_select(),
    conda:
        ENV
    shell:
        "{EMFLOW} resolve-questions --files {input} --out {output} --select {params.select:q} > {log} 2>&1"
