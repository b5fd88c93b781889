# The probe set: the configured question file(s), selected by id (variants excluded unless named), with the
# sample count and judged metrics from config, written once as one file that generate and judge both read.


rule resolve_questions:
    input:
        [local for _, _, local in QUESTION_SOURCES],
    output:
        L.questions,
    log:
        L.log("questions", "resolve_questions"),
    params:
        select=to_json(QUESTIONS.selection()),
    conda:
        ENV
    shell:
        "emflow resolve_questions --files {input} --out {output} --select {params.select:q} > {log} 2>&1"
