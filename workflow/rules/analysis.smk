# Analysis: EM tables with confidence intervals, plotnine figures, one self-contained report. These are the only
# jobs that read every run, so adding a seed reruns them and nothing else that already exists. Table and figure
# names and their captions (workflow/report/) come from emflow.analysis.names (TABLES, FIGURES, for_report in
# common.smk). Folders passed to the commands are derived from the declared files.


rule aggregate:
    input:
        judgments=ALL_JUDGMENTS,
        runs=ALL_RUN_DIRS,
        secondary=ALL_SECONDARY,
    output:
        for_report(TABLES, "Tables"),
    log:
        L.log("analysis", "aggregate"),
    params:
        # only what the tables depend on: figure and report settings do not rerun the aggregation
        analysis=ANALYSIS.tables_json(),
        out=lambda w, output: str(Path(output[0]).parent),
    conda:
        ENV
    shell:
        "emflow aggregate --judgments {input.judgments} --run-dirs {input.runs} --secondary {input.secondary}"
        " --out-dir {params.out}"
        " --params {params.analysis:q} > {log} 2>&1"


rule figures:
    input:
        tables=TABLES,
        judgments=ALL_JUDGMENTS,
    output:
        for_report(FIGURES, "Figures"),
    log:
        L.log("analysis", "figures"),
    params:
        tables=lambda w, input: str(Path(input.tables[0]).parent),
        out=lambda w, output: str(Path(output[0]).parent),
        definition=ANALYSIS.primary,  # also filled into the figures' captions (snakemake.params.definition)
        fig=ANALYSIS.figures.to_json(),
        # their specs (hub ids), from which the size figure parses parameter counts (unless figures.model_sizes)
        models=to_json(C["models"]),
    conda:
        ENV
    shell:
        "emflow figures --tables-dir {params.tables} --judgments {input.judgments} --out-dir {params.out}"
        " --definition {params.definition:q} --params {params.fig:q} --models {params.models:q} > {log} 2>&1"


rule report:
    input:
        calibration=CALIBRATIONS,
        tables=TABLES,
        figures=FIGURES,
        judgments=ALL_JUDGMENTS,
    output:
        report(L.report, caption="../report/summary.rst", category="Summary"),
    log:
        L.log("analysis", "report"),
    params:
        tables=lambda w, input: str(Path(input.tables[0]).parent),
        figures=lambda w, input: str(Path(input.figures[0]).parent),
        examples=ANALYSIS.examples_per_cell,
        calibration=lambda w, input: f"--calibration {input.calibration}" if CALIBRATIONS else "",
        provenance=REPORT_PROVENANCE,
    conda:
        ENV
    shell:
        "emflow report --tables-dir {params.tables} --figures-dir {params.figures} --judgments {input.judgments}"
        " --out {output} --provenance {params.provenance:q} --examples-per-cell {params.examples}"
        " {params.calibration} > {log} 2>&1"
