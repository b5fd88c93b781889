# Dataset preparation: (fetched or local) source → decrypted, canary-free, validated jsonl → seeded split.


rule prepare_dataset:
    input:
        lambda w: dataset_local_source(w.dataset)[1],
    output:
        L.dataset(),
    log:
        L.log("datasets", "{dataset}.prepare"),
    params:
        spec=prepare_spec,
        resources_dir=RES,
    conda:
        ENV
    shell:
        "emflow prepare_dataset --name {wildcards.dataset} --spec {params.spec:q}"
        " --resources-dir {params.resources_dir} --out {output} > {log} 2>&1"


rule split_dataset:
    input:
        L.dataset(),
    output:
        train=L.dataset(part="train"),
        eval=L.dataset(part="eval"),
    log:
        L.log("datasets", "{dataset}.split"),
    params:
        eval_rows=lambda w: DATASETS[w.dataset].eval_rows,
        split_seed=C.get("split_seed", 1234),
    conda:
        ENV
    shell:
        "emflow split_dataset --name {wildcards.dataset} --in {input} --train-out {output.train}"
        " --eval-out {output.eval} --eval-rows {params.eval_rows} --split-seed {params.split_seed} > {log} 2>&1"
