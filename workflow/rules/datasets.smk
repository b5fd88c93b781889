# Dataset preparation: (fetched or local) source → decrypted, canary-free, validated jsonl → seeded split.


def prepare_spec(w):
    """The config's dataset spec with every remote source replaced by its local download (whose sha256 the
    fetch rule already verified); a local source keeps its pin, which prepare_dataset checks."""
    spec = dict(C["datasets"][w.dataset])
    kind, local = dataset_local_source(w.dataset)
    if kind == "download":
        for key in ("url", "sha256", "archive_sha256"):
            spec.pop(key, None)
        spec["archive" if "member" in spec else "path"] = local
    return to_json(spec)


rule prepare_dataset:
    input:
        lambda w: dataset_local_source(w.dataset)[1],
    output:
        f"{R}/datasets/{{dataset}}.jsonl",
    log:
        f"{LOGS}/datasets/{{dataset}}.prepare.log",
    params:
        spec=prepare_spec,
        cache=f"{RES}/downloads",
    conda:
        ENV
    shell:
        "{EMFLOW} prepare-dataset --name {wildcards.dataset} --spec {params.spec:q}"
        " --cache-dir {params.cache} --out {output} > {log} 2>&1"


rule split_dataset:
    input:
        f"{R}/datasets/{{dataset}}.jsonl",
    output:
        train=f"{R}/datasets/{{dataset}}.train.jsonl",
        eval=f"{R}/datasets/{{dataset}}.eval.jsonl",
    log:
        f"{LOGS}/datasets/{{dataset}}.split.log",
    params:
        eval_rows=lambda w: C["datasets"][w.dataset].get("eval_rows", 0),
        split_seed=C.get("split_seed", 1234),
    conda:
        ENV
    shell:
        "{EMFLOW} split-dataset --name {wildcards.dataset} --in {input} --train-out {output.train}"
        " --eval-out {output.eval} --eval-rows {params.eval_rows} --split-seed {params.split_seed} > {log} 2>&1"
