# The workflow's Python: validate the config first, then small input functions and the target builder.
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))  # run from a checkout without installing

from emflow.fetch.hub import Asset, asset_identity, is_url, question_sources, url_download_path
from emflow.config.experiment import load_experiment
from emflow.errors import EmflowError
from emflow.judge.backends import backend_params

try:
    EXP = load_experiment(config, source="config (config.yaml + overlays)")
except EmflowError as err:
    raise WorkflowError(f"emflow config error: {err}") from None

C = EXP.config
R = f"results/{EXP.name}"
RES = C.get("resources_dir", "resources")
LOGS = f"{R}/logs"
ENV = "../../envs/emflow.yaml"
RUN = "{base}/{persona}/{dataset}/seed{seed}"


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    base=_alternatives(C["models"]),
    persona=_alternatives(C["personas"]),
    dataset=_alternatives(C["datasets"]),
    seed=r"\d+",
    step=r"\d+",


def asset(spec):
    return Asset(spec, RES)


def to_json(obj):
    """Rule parameters as canonical JSON: the same config, however its files were merged, gives the same params
    (Snakemake reruns a job whose params text changed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _identities():
    """Identity of every asset a result depends on (spec + content fingerprint of a local folder), checked now:
    a changed or missing model, persona or judge must rerun or stop the jobs that used it."""
    built = (C["demo"]["out_dir"],) if "demo" in C else ()
    ident = lambda spec, field: asset_identity(spec, resources_dir=RES, built_under=built, field=field,
                                               source="config (config.yaml + overlays)")
    models, personas = sorted({r.base for r in EXP.runs}), sorted({r.persona for r in EXP.runs})
    out = {"models": {m: ident(C["models"][m], f"models.{m}") for m in models},
           "personas": {p: ident(C["personas"][p], f"personas.{p}") if C["personas"][p] else None for p in personas}}
    out["judge"] = ident(C["judge"]["model"], "judge.model") if C["judge"]["backend"] == "hf" else C["judge"]["model"]
    return out


try:
    IDENTITY = _identities()
except EmflowError as err:
    raise WorkflowError(f"emflow config error: {err}") from None


def run_identity(w):
    """The base and persona a run's results come from (tracked as a param of train, generate and judge)."""
    return to_json({"base": IDENTITY["models"][w.base], "persona": IDENTITY["personas"][w.persona]})


def model_asset(w):
    return asset(C["models"][w.base])


def persona_asset(w):
    spec = C["personas"][w.persona]
    return asset(spec) if spec else None


def persona_arg(w):
    p = persona_asset(w)
    return p.path if p else "none"


def asset_inputs(w):
    """The model (and persona) snapshot folders a job reads, so fetch/demo rules run first."""
    inputs = {"base": model_asset(w).snapshot_dir}
    if persona_asset(w):
        inputs["persona"] = persona_asset(w).snapshot_dir
    return inputs


def questions_file():
    """The experiment's resolved probe set (rule resolve_questions): what generate and judge read."""
    return f"{R}/questions.yaml"


def dataset_local_source(dataset):
    """(kind, local file) where kind is 'path' | 'archive' | 'download' (a URL fetched by fetch_url)."""
    spec = C["datasets"][dataset]
    if "path" in spec:
        return "path", spec["path"]
    if "url" in spec:
        return "download", f"{RES}/downloads/datasets/{dataset}.jsonl"
    if is_url(spec["archive"]):
        return "download", url_download_path(spec["archive"], "archives", RES)
    return "archive", spec["archive"]


def question_select():
    """The selection resolve_questions applies (ids, samples, metrics); later stages read its result whole."""
    q = C["questions"]
    return to_json({k: q[k] for k in ("ids", "samples_per_paraphrase", "metrics") if q.get(k) is not None})


def resolved_select():
    """For stages reading the resolved set: only the ids, so variants selected by id are not filtered out again."""
    return to_json({"ids": C["questions"].get("ids")})


def run_keys():
    return [dict(base=r.base, persona=r.persona, dataset=r.dataset, seed=r.seed) for r in EXP.runs]


def run_files(pattern, per_step=False):
    """Expand a path pattern over every run (and every evaluated step of that run)."""
    out = []
    for r in EXP.runs:
        keys = dict(base=r.base, persona=r.persona, dataset=r.dataset, seed=r.seed)
        steps = EXP.eval_steps(r.dataset) if per_step else [None]
        out += [pattern.format(**keys, step=s) for s in steps]
    return out


def all_judgments():
    return run_files(f"{R}/judgments/{RUN}/step-{{step}}.jsonl", per_step=True)


def all_run_dirs():
    return run_files(f"{R}/runs/{RUN}")


def final_targets():
    return [f"{R}/report.html", *TABLES, *FIGURES]


# Rules call the emflow CLI of this checkout with the interpreter that runs Snakemake (the .venv locally and on
# Leonardo, where jobs see the same filesystem), even when the venv is not activated; with a conda or container
# deployment (--sdm conda/apptainer), with the `python` that environment provides.
def _python():
    from snakemake.settings.types import DeploymentMethod

    methods = workflow.deployment_settings.deployment_method
    if DeploymentMethod.CONDA in methods or DeploymentMethod.APPTAINER in methods:
        return "python"
    return sys.executable


EMFLOW = f"PYTHONPATH={Path(workflow.basedir) / 'workflow'}${{PYTHONPATH:+:$PYTHONPATH}} {_python()} -m emflow"
