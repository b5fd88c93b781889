# emflow: emergent-misalignment experiments end to end. This file is a table of contents; the stages live in
# workflow/rules/*.smk and the code they run in workflow/emflow/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/questions.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        final_targets(),
    default_target: True
