# The workflow's Python: the config validated once into the Experiment (typed sections, runs, steps), then the
# values and small input functions the stage files use, and the builder of final targets. No rules here, and
# no functions in the stage files (snakemake --lint). Per-run values are looked up in tables built once, so
# the DAG of a large grid builds fast (benchmarks/dag_scale.py).
import dataclasses
import inspect
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # run from a checkout without installing

from emflow.analysis.names import FIGURES as FIGURE_NAMES
from emflow.analysis.names import REPORT_TABLES, figure_caption, table_caption
from emflow.analysis.names import TABLES as TABLE_NAMES
from emflow.config.cluster import parse_cluster
from emflow.config.experiment import load_experiment
from emflow.config.personas import persona_adapter
from emflow.config.sections.base import canonical_json
from emflow.data.questions import load_question_set, question_sources, read_question_file
from emflow.errors import EmflowError
from emflow.fetch.asset import Asset
from emflow.fetch.download import is_url, url_download_path
from emflow.fetch.identity import asset_identity
from emflow.layout import RUN, STEP0, Layout
from snakemake.logging import logger

SOURCE = "config (config.yaml + overlays)"

try:
    # Job sizes from a cluster profile (its `config: cluster:`), not part of the experiment: see job_resources.
    CLUSTER = parse_cluster(config.pop("cluster", None))
    EXP = load_experiment(config, source=SOURCE)
except EmflowError as err:
    raise WorkflowError(f"emflow config error: {err}") from None

C = EXP.config
L = Layout.of(EXP.name)
RES = C.get("resources_dir", "resources")
ENV = "../../envs/emflow.yaml"
DATASETS = EXP.section("datasets")
QUESTIONS = EXP.section("questions")
JUDGE = EXP.section("judge")
DEMO = EXP.section("demo")


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    base=_alternatives(C["models"]),
    persona=_alternatives(C["personas"]),
    dataset=_alternatives(C["datasets"]),
    variant=_alternatives(EXP.variants),
    seed=r"\d+",
    step=r"\d+",


# Rule parameters as canonical JSON: the same config, however its files were merged, gives the same params
# (Snakemake reruns a job whose params text changed); sections serialise the same way (Section.to_json).
to_json = canonical_json


def asset(spec):
    return Asset(spec, RES)


# ------------------------------------------------------------------------------------ models and personas

# Identity of every asset a result depends on (spec + content fingerprint of a local folder), checked now: a
# changed or missing model, persona or judge must rerun or stop the jobs that used it.
try:
    _BUILT = (DEMO.out_dir,) if DEMO else ()
    _ident = lambda spec, field: asset_identity(spec, resources_dir=RES, built_under=_BUILT, field=field,
                                                source=SOURCE)
    BASES = {b: asset(C["models"][b]) for b in sorted({r.base for r in EXP.runs})}
    # Each run's persona adapter for its base (personas.<p>, or personas.<p>.<base>), per (base, persona).
    ADAPTERS = {(b, p): persona_adapter(C, p, b, SOURCE) for b, p in sorted({(r.base, r.persona) for r in EXP.runs})}
    PERSONAS = {bp: asset(a.spec) if a else None for bp, a in ADAPTERS.items()}
    _BASE_ID = {b: _ident(C["models"][b], f"models.{b}") for b in BASES}
    _ADAPTER_ID = {a.spec: _ident(a.spec, a.field) for a in ADAPTERS.values() if a}  # once per adapter
    JUDGE_ASSET = asset(JUDGE.model) if JUDGE.backend == "hf" else None  # a local judge: a fetched or built folder
    JUDGE_IDENTITY = _ident(JUDGE.model, "judge.model") if JUDGE_ASSET else JUDGE.model
    SECONDARY = JUDGE.secondary  # judge.secondary, or None: then no secondary jobs and an empty agreement table
    SECONDARY_ASSET = asset(SECONDARY.model) if SECONDARY and SECONDARY.backend == "hf" else None
    SECONDARY_IDENTITY = (
        _ident(SECONDARY.model, "judge.secondary.model") if SECONDARY_ASSET else SECONDARY and SECONDARY.model
    )
except EmflowError as err:
    raise WorkflowError(f"emflow config error: {err}") from None

# The base and persona a run's results come from (tracked as a param of train, generate and judge).
_RUN_IDENTITY = {
    (b, p): to_json({"base": _BASE_ID[b], "persona": _ADAPTER_ID[a.spec] if a else None})
    for (b, p), a in ADAPTERS.items()
}
# The model (and persona) snapshot folders a job reads, so fetch/demo rules run first.
_ASSET_INPUTS = {
    (b, p): {"base": BASES[b].snapshot_dir, **({"persona": a.snapshot_dir} if a else {})}
    for (b, p), a in PERSONAS.items()
}


def run_identity(w):
    return _RUN_IDENTITY[w.base, w.persona]


def base_path(w):
    return BASES[w.base].path


def persona_path(w):
    a = PERSONAS[w.base, w.persona]
    return a.path if a else "none"


def asset_inputs(w):
    return _ASSET_INPUTS[w.base, w.persona]


def run_key(w):
    return RUN.format(base=w.base, persona=w.persona, dataset=w.dataset, variant=w.variant, seed=w.seed)


# The config's specs (hf:OWNER/NAME@REVISION), recorded in every checkpoint.
def base_spec(w):
    return C["models"][w.base]


def persona_spec(w):
    a = ADAPTERS[w.base, w.persona]
    return a.spec if a else "none"


def persona_fit_args(w):
    """The config key of the run's persona adapter and whether a recorded other base is intended, for the
    trainer's fit check (emflow.train.persona_fit)."""
    a = ADAPTERS[w.base, w.persona]
    mismatch = "intended" if a and a.base_mismatch_intended else "refused"
    return f"--persona-field {shlex.quote(a.field)} --base-mismatch {mismatch}" if a else ""


# ------------------------------------------------------------------------------------------------- data


def dataset_local_source(dataset):
    """(kind, local file) where kind is 'path' | 'archive' | 'download' (a URL fetched by fetch_url)."""
    spec = DATASETS[dataset]
    if spec.kind == "path":
        return "path", spec.path
    if spec.kind == "url":
        return "download", url_download_path(spec.url, "datasets", RES)
    if is_url(spec.archive):
        return "download", url_download_path(spec.archive, "archives", RES)
    return "archive", spec.archive


def prepare_spec(w):
    """The dataset's spec with a remote source replaced by its local download (whose sha256 the fetch rule
    already verified); a local source keeps its pin, which prepare_dataset checks."""
    kind, local = dataset_local_source(w.dataset)
    spec = DATASETS[w.dataset]
    return (spec.fetched_as(local) if kind == "download" else spec).to_json()


QUESTION_SOURCES = question_sources(QUESTIONS, RES)
# For stages reading the resolved set: only the ids, so variants selected by id are not filtered out again.
RESOLVED_SELECT = to_json({"ids": list(QUESTIONS.ids) if QUESTIONS.ids is not None else None})

# ---------------------------------------------------------------------------------------------- fetching


def hub_assets():
    """Every hub asset the experiment loads: models and the persona adapters of its runs (each base's), and an hf
    judge."""
    assets = [*BASES.values(), *(p for p in PERSONAS.values() if p), *([JUDGE_ASSET] if JUDGE_ASSET else [])]
    assets += [SECONDARY_ASSET] if SECONDARY_ASSET else []
    return [a for a in assets if a.is_hub]


def snapshot_requires(w, output):
    """Subfolders of this snapshot the config loads (personas of a multi-persona repo): the fetch checks them."""
    subs = sorted({a.subfolder for a in hub_assets() if a.snapshot_dir == output[0] and a.subfolder})
    return " ".join(f"--require {s}" for s in subs)


def url_downloads():
    files = {dataset_local_source(d)[1] for d in {r.dataset for r in EXP.runs} if dataset_local_source(d)[0] == "download"}
    return sorted(files) + [local for configured, _, local in QUESTION_SOURCES if local != configured]


def url_of(path):
    """The URL and pinned sha256 behind a download path (datasets, archives, question files)."""
    for configured, sha256, local in QUESTION_SOURCES:
        if local == path:
            return configured, sha256
    for name, spec in DATASETS.items():
        kind, local = dataset_local_source(name)
        if kind == "download" and local == path:
            return (spec.url, spec.sha256) if spec.kind == "url" else (spec.archive, spec.archive_sha256)
    raise WorkflowError(f"no configured URL downloads to {path}")


# --------------------------------------------------------------------------------------- train, generate

GENERATION = EXP.section("generation")
# The job's tracked params: the section without group_checkpoints (how jobs are cut, not what is generated).
GENERATION_PARAMS = GENERATION.job_json()
# Per (dataset, variant): a variant may change the batch size or epochs, hence the steps.
_DATASET_VARIANTS = sorted({(r.dataset, r.variant) for r in EXP.runs})
_CHECKPOINT_STEPS = {dv: ",".join(map(str, EXP.steps(*dv))) for dv in _DATASET_VARIANTS}
# Each variant's training section, as the train rule's tracked param: adding a variant changes no other run's.
TRAINING_PARAMS = {v: EXP.training(v).to_json() for v in {r.variant for r in EXP.runs}}


def checkpoint_steps(w):
    return _CHECKPOINT_STEPS[w.dataset, w.variant]


def training_params(w):
    return TRAINING_PARAMS[w.variant]


def recipe_field(w):
    """The config key of the run's recipe, for the trainer's errors."""
    return "training" if w.variant == "default" else f"variants.{w.variant}"


# Steps the trainer also saves, adapter only, for the geometry (checkpoints.analysis_every): no generate/judge jobs.
_ANALYSIS_STEPS = {dv: ",".join(map(str, EXP.analysis_steps(*dv))) or "none" for dv in _DATASET_VARIANTS}


def analysis_steps(w):
    return _ANALYSIS_STEPS[w.dataset, w.variant]


def train_inputs(w):
    return {**asset_inputs(w), "train": L.dataset(w.dataset, "train"), "eval": L.dataset(w.dataset, "eval")}


def eval_arg(w, input):
    """eval_rows: 0 leaves an empty eval split: train without an eval set then."""
    return input.eval if DATASETS[w.dataset].eval_rows > 0 else "none"


def run_generate_inputs(w):
    """The model and persona, the question set and the run's checkpoints."""
    return {**asset_inputs(w), "questions": L.questions, "run": L.run_dir(run_key(w))}


def step0_generate_inputs(w):
    """Step 0: the model and persona and the question set (no run: answered before, and apart from, training)."""
    return {**asset_inputs(w), "questions": L.questions}


# The per-run generate and judge rules make the checkpoints' files; step 0 is copied from step0/ (share_step0_*).
CHECKPOINT_STEP = r"[1-9]\d*"


def datasets_by_steps():
    """[(variant, checkpoint steps, [datasets])] over the (dataset, variant) pairs that runs use, in first-use
    order: one grouped generate rule each (its wildcard constraints then match exactly these pairs)."""
    groups = {}
    for dataset, variant in dict.fromkeys((r.dataset, r.variant) for r in EXP.runs):
        groups.setdefault((variant, tuple(EXP.steps(dataset, variant))), []).append(dataset)
    return [(v, steps, datasets) for (v, steps), datasets in groups.items()]


# -------------------------------------------------------------------------------------------------- judge

# What is scored and how: only the configured backend's keys, tracked as the rules' params; an hf judge's model
# is the folder it is loaded from.
JUDGE_PARAMS = (dataclasses.replace(JUDGE, model=JUDGE_ASSET.path) if JUDGE_ASSET else JUDGE).tracked_json()
CALIBRATION_INPUT = {"calibration": L.calibration} if JUDGE.calibration.enabled else {}
_JUDGE_MODEL_INPUT = {"model": JUDGE_ASSET.snapshot_dir} if JUDGE_ASSET else {}


def judge_calibration_inputs(w):
    return {"questions": L.questions, **_JUDGE_MODEL_INPUT}


def _judging(generations):
    return {"generations": generations, "questions": L.questions, **_JUDGE_MODEL_INPUT, **CALIBRATION_INPUT}


def judge_inputs(w):
    return _judging(L.generations(run_key(w), w.step))


def step0_judge_inputs(w):
    return _judging(L.step0_generations(STEP0.format(base=w.base, persona=w.persona, seed=w.seed)))


# judge.secondary, the same way: its backend's keys as tracked params, its own gate; one job per run scores the
# seeded sample of every evaluated step (the judge loads once per run). Its sample is tracked beside its params.
if SECONDARY:
    SECONDARY_PARAMS = (
        dataclasses.replace(SECONDARY, model=SECONDARY_ASSET.path) if SECONDARY_ASSET else SECONDARY
    ).tracked_json()
    SECONDARY_SAMPLE = SECONDARY.sample.to_json()
    SECONDARY_CALIBRATION_INPUT = {"calibration": L.secondary_calibration} if SECONDARY.calibration.enabled else {}
_SECONDARY_MODEL_INPUT = {"model": SECONDARY_ASSET.snapshot_dir} if SECONDARY_ASSET else {}
_EVAL_STEPS = {dv: EXP.eval_steps(*dv) for dv in _DATASET_VARIANTS}


def secondary_calibration_inputs(w):
    return {"questions": L.questions, **_SECONDARY_MODEL_INPUT}


def secondary_inputs(w):
    return {
        "generations": [L.generations(run_key(w), s) for s in _EVAL_STEPS[w.dataset, w.variant]],
        "questions": L.questions,
        **_SECONDARY_MODEL_INPUT,
        **SECONDARY_CALIBRATION_INPUT,
    }


# ------------------------------------------------------------------------------------------------ analysis

ANALYSIS = EXP.section("analysis")
TABLES = [L.table(n) for n in TABLE_NAMES]
FIGURES = [L.figure(n, ext) for n in FIGURE_NAMES for ext in ("png", "pdf")]
REPORT_PROVENANCE = to_json(
    {
        "experiment": EXP.name,
        "config_hash": EXP.hash,
        "judge_backend": JUDGE.backend,
        "judge_model": JUDGE.model,
        # as written in the config (the report shows it verbatim)
        "em_definition": {ANALYSIS.primary: C["analysis"]["definitions"][ANALYSIS.primary]},
        "seeds": C["seeds"],
    }
)


def for_report(paths, category):
    """Mark figure PNGs and the REPORT_TABLES for Snakemake's report, each with its caption file."""
    out = []
    for path in paths:
        name, ext = Path(path).stem, Path(path).suffix
        if ext == ".png":
            out.append(report(path, caption=f"../report/{figure_caption(name)}", category=category))
        elif ext == ".csv" and name in REPORT_TABLES:
            out.append(report(path, caption=f"../report/{table_caption(name)}", category=category))
        else:
            out.append(path)
    return out


# ---------------------------------------------------------------------------------------------- targets


def run_files(path, per_step=False):
    """``path(run key[, step])`` over every run (and every evaluated step of that run)."""
    out = []
    for r in EXP.runs:
        out += [path(r.key, s) for s in _EVAL_STEPS[r.dataset, r.variant]] if per_step else [path(r.key)]
    return out


ALL_JUDGMENTS = run_files(L.judgments, per_step=True)
ALL_SECONDARY = run_files(L.secondary_judgments) if SECONDARY else []
# Every judge's calibration table, for the report.
CALIBRATIONS = [L.calibration] * JUDGE.calibration.enabled + [L.secondary_calibration] * bool(
    SECONDARY and SECONDARY.calibration.enabled
)
ALL_RUN_DIRS = run_files(L.run_dir)


# Each run's copy of its step-0 answers: only judge.secondary reads it, but a run's generations folder holds
# every evaluated step whichever judges are configured.
STEP0_ANSWERS = run_files(lambda key: L.generations(key, 0))


def final_targets():
    return [L.report, *TABLES, *FIGURES, *STEP0_ANSWERS]


# ------------------------------------------------------------------------------------------- cluster jobs

# With a cluster profile (CLUSTER, from its `config: cluster`; see workflow/emflow/config/cluster.py) each
# submitted job gets the resources of its kind, `gpu` (with a walltime sized from the plan) or `internet` (the
# rules that need the internet); without one (profiles local, demo) rules declare none. Where the internet
# rules run, the config decides per group of rules, fetch_run_on and judge.run_on (login = local rules beside
# snakemake, job = submitted as `internet` jobs).
FETCH_ON_LOGIN = C.get("fetch_run_on", "login") == "login"
_CAPPED = set()


def _answers_in(questions):
    return sum(len(q.paraphrases) * q.samples_per_paraphrase for q in questions)


def _answers_per_step():
    """Answers per evaluated step, from the question files when they are here (local, or fetched); else None."""
    files = [local for _, _, local in QUESTION_SOURCES]
    if not CLUSTER or not all(Path(f).is_file() for f in files):
        return None
    try:
        return _answers_in(load_question_set(files, **QUESTIONS.selection()))
    except EmflowError as err:
        raise WorkflowError(f"emflow config error: {err}") from None


_ANSWERS = {"per_step": _answers_per_step()}


def job_resources(kind, runtime):
    """``kind``'s resources (gpu | internet) and the walltime function ``runtime``; none without a cluster."""
    return {**CLUSTER.kinds[kind].resources, "runtime": runtime} if CLUSTER else {}


def judge_resources(judge, runtime):
    """An hf judge is a GPU job sized by ``runtime``; an API judge submitted as a job is an internet job."""
    return job_resources("gpu", runtime) if judge.backend == "hf" else job_resources("internet", internet_runtime)


def _answers(path):
    """Answers per step: from the question files, else from the resolved set ``path`` once resolve_questions has
    written it (until then, before `snakemake fetch`, the walltime shows as <TBD> and is sized when the job is
    ready to run)."""
    if _ANSWERS["per_step"] is None:
        if not Path(path).is_file():
            raise FileNotFoundError(2, "not resolved yet", path)
        _ANSWERS["per_step"] = _answers_in(read_question_file(path).values())
    return _ANSWERS["per_step"]


def _gpu_minutes(name, units, attempt):
    """A GPU job's walltime; said once per rule when the partition's limit cuts it."""
    if name not in _CAPPED and CLUSTER.capped(name, units):
        _CAPPED.add(name)
        logger.warning(
            f"emflow: {name}: {units} units need more than the gpu partition's {CLUSTER.kinds['gpu'].max_runtime}"
            " min; its walltime is cut to that limit (a killed job is retried and resumes where it stopped)"
        )
    return CLUSTER.gpu_minutes(name, units, attempt)


def train_runtime(wildcards, attempt):
    return _gpu_minutes("train", EXP.steps_total(wildcards.dataset, wildcards.variant)[0], attempt)


def generate_runtime(wildcards, input, attempt):
    steps = len(EXP.steps(wildcards.dataset, wildcards.variant)) if GENERATION.group_checkpoints else 1
    return _gpu_minutes("generate", _answers(input.questions) * steps, attempt)


def step0_runtime(wildcards, input, attempt):
    return _gpu_minutes("generate", _answers(input.questions), attempt)


def judge_runtime(wildcards, input, attempt):
    return _gpu_minutes("judge", _answers(input.questions), attempt)


def secondary_runtime(wildcards, input, attempt):
    # at most every answer of every evaluated step (the seeded sample is a part of them)
    steps = len(_EVAL_STEPS[wildcards.dataset, wildcards.variant])
    return _gpu_minutes("judge", _answers(input.questions) * steps, attempt)


def calibration_runtime(wildcards, attempt):
    return _gpu_minutes("judge", 0, attempt)  # a few dozen labelled answers: the floor


def internet_runtime(wildcards, attempt):
    return CLUSTER.kinds["internet"].fixed_minutes(attempt)


def cluster_plan():
    """Which rules go where, printed when the DAG is built (dry runs included)."""
    gpu, internet = CLUSTER.kinds["gpu"], CLUSTER.kinds["internet"]
    judges = [JUDGE] + ([SECONDARY] if SECONDARY else [])
    on = {"gpu": ["train", "generate"], "internet": [] if FETCH_ON_LOGIN else ["fetch_hf", "fetch_url"], "login": []}
    for j, rules in zip(judges, (["judge", "judge_calibration"], ["judge_secondary", "judge_calibration_secondary"])):
        where = "gpu" if j.backend == "hf" else "login" if j.run_on == "login" else "internet"
        on[where] += rules
    on["login"] += ["fetch_hf", "fetch_url"] if FETCH_ON_LOGIN else []
    return (
        f"emflow on this cluster: gpu jobs -> {gpu.partition} (walltime from the plan x attempt, at most"
        f" {gpu.max_runtime} min): {', '.join(on['gpu'])}; internet jobs -> {internet.partition}"
        f" ({internet.fixed_minutes(1)} min, at most {internet.max_runtime}): {', '.join(on['internet']) or 'none'};"
        f" local rules on the login node: {', '.join(on['login'] + ['the light file rules'])}"
    )


if CLUSTER and workflow.is_main_process:
    logger.info(cluster_plan())


def variant_plan():
    """The runs of each recipe variant with what it changes, printed when the DAG is built (dry runs included)."""
    lines = []
    for variant, runs in EXP.runs_by_variant().items():
        over = C.get("variants", {}).get(variant, {})
        what = to_json(over) if over else "the training section"
        cells = ", ".join(dict.fromkeys(r.cell for r in runs))
        lines.append(f"  {variant} ({what}): {len(runs)} runs, cells {cells}")
    return "emflow runs per recipe variant:\n" + "\n".join(lines)


if workflow.is_main_process:
    logger.info(variant_plan())


# ----------------------------------------------------------------------------------------- the command

# Every rule's shell runs `emflow <rule>`: a shell function (Snakemake's shell prefix, so it is in every job,
# local or submitted) calling the emflow of this checkout with the interpreter that runs Snakemake (the .venv
# locally and on Leonardo, where jobs see the same filesystem), even when the venv is not activated; with a
# conda or container deployment (--sdm conda/apptainer), with the `python` that environment provides. The
# judge's speed settings (concurrency, retries, timeouts, batch sizes) reach it the same way, outside the
# rules' params (which Snakemake tracks), so tuning them reruns nothing; they never change a score.
def _python():
    from snakemake.settings.types import DeploymentMethod

    methods = workflow.deployment_settings.deployment_method
    if DeploymentMethod.CONDA in methods or DeploymentMethod.APPTAINER in methods:
        return "python"
    return sys.executable


_PYTHONPATH = shlex.quote(str(Path(workflow.basedir) / "workflow"))
_PREFIX = (
    "set -euo pipefail; "
    f'emflow() {{ PYTHONPATH={_PYTHONPATH}${{PYTHONPATH:+:$PYTHONPATH}} {shlex.quote(_python())} -m emflow "$@"; }}; '
    f"EMFLOW_JUDGE_RUNTIME={shlex.quote(JUDGE.runtime_json())}; "
    + (f"EMFLOW_SECONDARY_RUNTIME={shlex.quote(SECONDARY.runtime_json())}; " if SECONDARY else "")
)
shell.prefix(_PREFIX.replace("{", "{{").replace("}", "}}"))  # Snakemake formats the prefix once


# Snakemake inspects the signature of an input or params function each time it calls one (about ten times per
# job); computing each signature once here takes about 1 s off the dry run of a 3,000-job grid
# (benchmarks/dag_scale.py). Every such function is defined in this file.
for _fn in [f for f in globals().values() if inspect.isfunction(f) and f.__code__.co_filename.endswith("common.smk")]:
    _fn.__signature__ = inspect.signature(_fn)
