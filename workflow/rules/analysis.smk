# Analysis: EM tables with confidence intervals, plotnine figures, one self-contained report. These are the only
# jobs that read every run, so adding a seed reruns them and nothing else that already exists.

TABLE_NAMES = ["em", "em_by_cell", "per_question", "training", "training_steps", "lora_norms", "hypotheses",
               "definitions"]
FIGURE_NAMES = ["em_trajectory", "coherence_trajectory", "loss_curves", "aligned_vs_coherent", "lora_norms",
                "domain_by_size"]
TABLES = [f"{R}/tables/{n}.csv" for n in TABLE_NAMES]
FIGURES = [f"{R}/figures/{n}.{ext}" for n in FIGURE_NAMES for ext in ("png", "pdf")]
# What `snakemake --report` shows (captions in workflow/report/): every figure's PNG and the main tables.
REPORT_TABLES = ["hypotheses", "em_by_cell", "em", "per_question", "training", "lora_norms", "definitions"]


def for_report(paths, category):
    """Mark figure PNGs and the REPORT_TABLES for Snakemake's report, each with its caption file."""
    out = []
    for path in paths:
        name, ext = Path(path).stem, Path(path).suffix
        if ext == ".png":
            out.append(report(path, caption=f"../report/{name}.rst", category=category))
        elif ext == ".csv" and name in REPORT_TABLES:
            out.append(report(path, caption=f"../report/table_{name}.rst", category=category))
        else:
            out.append(path)
    return out


A = C["analysis"]
PRIMARY = A.get("primary_definition", next(iter(A["definitions"])))


rule aggregate:
    input:
        judgments=all_judgments(),
        runs=all_run_dirs(),
    output:
        for_report(TABLES, "Tables"),
    log:
        f"{LOGS}/analysis/aggregate.log",
    params:
        # only what the tables depend on: figure and report settings do not rerun the aggregation
        analysis=to_json({k: v for k, v in A.items() if k not in ("figures", "examples_per_cell")}),
        out=f"{R}/tables",
    conda:
        ENV
    shell:
        "{EMFLOW} aggregate --judgments {input.judgments} --run-dirs {input.runs} --out-dir {params.out}"
        " --params {params.analysis:q} > {log} 2>&1"


rule figures:
    input:
        tables=TABLES,
        judgments=all_judgments(),
    output:
        for_report(FIGURES, "Figures"),
    log:
        f"{LOGS}/analysis/figures.log",
    params:
        tables=f"{R}/tables",
        out=f"{R}/figures",
        # models: their hub ids, from which the size figure parses parameter counts (unless figures.model_sizes).
        fig=to_json({"definition": PRIMARY, "models": C["models"], **A.get("figures", {})}),
    conda:
        ENV
    shell:
        "{EMFLOW} figures --tables-dir {params.tables} --judgments {input.judgments} --out-dir {params.out}"
        " --params {params.fig:q} > {log} 2>&1"


rule report:
    input:
        unpack(lambda w: calibration_input()),
        tables=TABLES,
        figures=FIGURES,
        judgments=all_judgments(),
    output:
        report(f"{R}/report.html", caption="../report/summary.rst", category="Summary"),
    log:
        f"{LOGS}/analysis/report.log",
    params:
        tables=f"{R}/tables",
        figures=f"{R}/figures",
        examples=A.get("examples_per_cell", 3),
        calibration=f"--calibration {CALIBRATION_CSV}" if calibration_input() else "",
        provenance=to_json(
            {
                "experiment": EXP.name,
                "config_hash": EXP.hash,
                "judge_backend": C["judge"]["backend"],
                "judge_model": C["judge"]["model"],
                "em_definition": {PRIMARY: A["definitions"][PRIMARY]},
                "seeds": C["seeds"],
            }
        ),
    conda:
        ENV
    shell:
        "{EMFLOW} report --tables-dir {params.tables} --figures-dir {params.figures} --judgments {input.judgments}"
        " --out {output} --provenance {params.provenance:q} --examples-per-cell {params.examples}"
        " {params.calibration} > {log} 2>&1"
