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
    conda:
        ENV
    shell:
        "emflow fetch_hf --repo {wildcards.owner}/{wildcards.name} --revision {wildcards.revision}"
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
        "emflow fetch_url --url {params.url:q} --sha256 '{params.sha}' --out {output} > {log} 2>&1"
