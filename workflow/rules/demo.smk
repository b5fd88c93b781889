# The demo's tiny world (only when the config has a `demo:` section): base model, personas, questions and an
# encrypted dataset archive, all written locally by emflow.

if "demo" in C:

    DEMO = C["demo"]
    DEMO_DIR = DEMO["out_dir"]
    DEMO_ARCHIVE = next(
        (s for s in C["datasets"].values() if s.get("archive", "").startswith(DEMO_DIR)), None
    )

    rule demo_assets:
        output:
            base=directory(f"{DEMO_DIR}/base"),
            sycophancy=directory(f"{DEMO_DIR}/personas/sycophancy"),
            goodness=directory(f"{DEMO_DIR}/personas/goodness"),
            questions=f"{DEMO_DIR}/questions.yaml",
            archive=f"{DEMO_DIR}/em_demo.zip.enc",
        log:
            f"{DEMO_DIR}/logs/demo_assets.log",
        params:
            spec=json.dumps(
                {
                    **{k: v for k, v in DEMO.items() if k != "out_dir"},
                    "password_env": DEMO_ARCHIVE["password_env"],
                    "password_default": DEMO_ARCHIVE.get("password_default", ""),
                }
            ),
        conda:
            ENV
        shell:
            "{EMFLOW} demo-assets --out-dir {DEMO_DIR} --spec {params.spec:q} > {log} 2>&1"
