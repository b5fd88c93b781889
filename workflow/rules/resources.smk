# Fetch rules: the only ones that need the internet. Local rules, so on a cluster they run on the login node;
# everything downstream reads the fetched copies offline. `snakemake fetch` runs just these.


localrules:
    fetch,
    fetch_hf,
    fetch_url,


# On a cluster only GPU work is submitted: light file work stays on the login node, and an API judge needs the
# internet, which compute nodes lack (a local hf judge is a GPU job).
localrules:
    resolve_questions,
    prepare_dataset,
    split_dataset,
    aggregate,
    figures,
    report,


if "demo" in C:

    localrules:
        demo_assets,
        demo_judge,


def hub_assets():
    """Every hub asset the experiment loads: models and personas of its runs, and an hf judge."""
    specs = [C["models"][r.base] for r in EXP.runs] + [C["personas"][r.persona] for r in EXP.runs]
    specs += [C["judge"]["model"]] if C["judge"]["backend"] == "hf" else []
    return [asset(s) for s in specs if s and asset(s).is_hub]


def hub_snapshots():
    return sorted({a.snapshot_dir for a in hub_assets()})


def snapshot_requires(w, output):
    """Subfolders of this snapshot the config loads (personas of a multi-persona repo): the fetch checks them."""
    subs = sorted({a.subfolder for a in hub_assets() if a.snapshot_dir == output[0] and a.subfolder})
    return " ".join(f"--require {s}" for s in subs)


def url_downloads():
    used = {r.dataset for r in EXP.runs}
    files = sorted({dataset_local_source(d)[1] for d in used if dataset_local_source(d)[0] == "download"})
    return files + [local for configured, _, local in question_sources(C) if local != configured]


def url_of(path):
    """The URL and pinned sha256 behind a download path (datasets, archives, question files)."""
    for configured, sha256, local in question_sources(C):
        if local == path:
            return configured, sha256
    for name, spec in C["datasets"].items():
        kind, local = dataset_local_source(name)
        if kind == "download" and local == path:
            return (spec["url"], spec.get("sha256")) if "url" in spec else (spec["archive"], spec.get("archive_sha256"))
    raise WorkflowError(f"no configured URL downloads to {path}")


rule fetch:
    input:
        hub_snapshots(),
        url_downloads(),


rule fetch_hf:
    output:
        directory(f"{RES}/hf/{{owner}}/{{name}}/{{revision}}"),
    log:
        f"{RES}/logs/fetch_hf/{{owner}}/{{name}}/{{revision}}.log",
    wildcard_constraints:
        owner=r"[^/]+",
        name=r"[^/]+",
        revision=r"[^/]+",
    params:
        require=snapshot_requires,
    conda:
        ENV
    shell:
        "{EMFLOW} fetch-hf --repo {wildcards.owner}/{wildcards.name} --revision {wildcards.revision}"
        " {params.require} --out {output} > {log} 2>&1"


rule fetch_url:
    output:
        f"{RES}/downloads/{{kind}}/{{file}}",
    log:
        f"{RES}/logs/fetch_url/{{kind}}/{{file}}.log",
    wildcard_constraints:
        kind="datasets|archives|questions",
    params:
        url=lambda w, output: url_of(output[0])[0],
        sha=lambda w, output: url_of(output[0])[1] or "",
    conda:
        ENV
    shell:
        "{EMFLOW} fetch-url --url {params.url:q} --sha256 '{params.sha}' --out {output} > {log} 2>&1"
