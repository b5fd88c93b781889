# Fetch rules: with the API judge, the only ones that need the internet; everything downstream reads the fetched
# copies offline. `snakemake fetch` runs just these. With fetch_run_on login they are local rules (on a cluster:
# beside snakemake on the login node); with job they are submitted as internet jobs (profiles/leonardo: the
# serial partition lrd_all_serial, which has outbound internet).


localrules:
    fetch,


if FETCH_ON_LOGIN:

    localrules:
        fetch_hf,
        fetch_url,


# Light file work stays on the login node: on a cluster only GPU work and (with run_on job) internet work is
# submitted.
localrules:
    resolve_questions,
    prepare_dataset,
    split_dataset,
    aggregate,
    figures,
    report,


if DEMO is not None:

    localrules:
        demo_assets,
        demo_judge,


rule fetch:
    input:
        sorted({a.snapshot_dir for a in hub_assets()}),
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
    resources:
        **job_resources("internet", internet_runtime),
    conda:
        ENV
    shell:
        # The one job that must reach the hub, whatever offline switches the job's environment sets (profiles'
        # precommand).
        "HF_HUB_OFFLINE=0 emflow fetch_hf --repo {wildcards.owner}/{wildcards.name} --revision {wildcards.revision}"
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
    resources:
        **job_resources("internet", internet_runtime),
    conda:
        ENV
    shell:
        "emflow fetch_url --url {params.url:q} --sha256 '{params.sha}' --out {output} > {log} 2>&1"
