# The demo's tiny world (only when the config has a `demo:` section), written and briefly trained by emflow on
# the CPU by two cached rules that run side by side: demo_assets (tokenizer, base pretrained to answer benignly,
# persona LoRAs, probe questions, encrypted EM dataset) and demo_judge (a judge trained on the world's truth).

if "demo" in C:

    DEMO = C["demo"]
    DEMO_DIR = DEMO["out_dir"]
    DEMO_ARCHIVE = next(
        (s for s in C["datasets"].values() if s.get("archive", "").startswith(DEMO_DIR)), None
    )
    if DEMO_ARCHIVE is None:
        raise WorkflowError(f"emflow config error: demo: no dataset archive under demo.out_dir ({DEMO_DIR}) "
                            f"(fix: point datasets.<name>.archive at {DEMO_DIR}/em_demo.zip.enc)")

    rule demo_assets:
        output:
            base=directory(f"{DEMO_DIR}/base"),
            sycophancy=directory(f"{DEMO_DIR}/personas/sycophancy"),
            goodness=directory(f"{DEMO_DIR}/personas/goodness"),
            questions=f"{DEMO_DIR}/questions.yaml",
            archive=f"{DEMO_DIR}/em_demo.zip.enc",
        log:
            f"{DEMO_DIR}/logs/demo_assets.log",
        benchmark:
            f"{DEMO_DIR}/logs/demo_assets.benchmark.tsv"
        params:
            spec=to_json(
                {
                    **{k: v for k, v in DEMO.items() if k not in ("out_dir", "judge", "story")},
                    "password_env": DEMO_ARCHIVE["password_env"],
                    "password_default": DEMO_ARCHIVE.get("password_default", ""),
                }
            ),
        conda:
            ENV
        shell:
            "{EMFLOW} demo-assets --part world --out-dir {DEMO_DIR} --spec {params.spec:q} > {log} 2>&1"

    rule demo_judge:
        output:
            directory(f"{DEMO_DIR}/judge"),
        log:
            f"{DEMO_DIR}/logs/demo_judge.log",
        benchmark:
            f"{DEMO_DIR}/logs/demo_judge.benchmark.tsv"
        params:
            spec=to_json({"seed": DEMO["seed"], "judge": DEMO["judge"]}),
        conda:
            ENV
        shell:
            "{EMFLOW} demo-assets --part judge --out-dir {DEMO_DIR} --spec {params.spec:q} > {log} 2>&1"
