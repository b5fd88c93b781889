# The demo's tiny world (only when the config has a `demo:` section), written and briefly trained by emflow on
# the CPU by two cached rules that run side by side: demo_assets (tokenizer, base pretrained to answer benignly,
# persona LoRAs, probe questions, encrypted EM dataset) and demo_judge (a judge trained on the world's truth).
# Each tracks exactly what changes its outputs: the world's keys (Demo.world) and the archive's password
# settings; the judge's keys and the seed.

if DEMO is not None:

    rule demo_assets:
        output:
            base=directory(f"{DEMO.out_dir}/base"),
            sycophancy=directory(f"{DEMO.out_dir}/personas/sycophancy"),
            goodness=directory(f"{DEMO.out_dir}/personas/goodness"),
            questions=f"{DEMO.out_dir}/questions.yaml",
            archive=f"{DEMO.out_dir}/em_demo.zip.enc",
        log:
            f"{DEMO.out_dir}/logs/demo_assets.log",
        benchmark:
            f"{DEMO.out_dir}/logs/demo_assets.benchmark.tsv"
        params:
            out_dir=lambda w, output: str(Path(output.base).parent),
            world=DEMO.world.to_json(),
            password_env=EXP.demo_archive().password_env,
            password_default=EXP.demo_archive().password_default or "",
        conda:
            ENV
        shell:
            "emflow demo_assets --out-dir {params.out_dir} --world {params.world:q}"
            " --password-env {params.password_env:q} --password-default {params.password_default:q} > {log} 2>&1"

    # With demo.judge.early_step the same training also leaves judge_early/ (the demo's judge.secondary).
    rule demo_judge:
        output:
            directory(f"{DEMO.out_dir}/judge"),
            *([directory(f"{DEMO.out_dir}/judge_early")] if DEMO.judge.early_step else []),
        log:
            f"{DEMO.out_dir}/logs/demo_judge.log",
        benchmark:
            f"{DEMO.out_dir}/logs/demo_judge.benchmark.tsv"
        params:
            out_dir=lambda w, output: str(Path(output[0]).parent),
            seed=DEMO.seed,
            judge=DEMO.judge.to_json(),
        conda:
            ENV
        shell:
            "emflow demo_judge --out-dir {params.out_dir} --seed {params.seed} --judge {params.judge:q} > {log} 2>&1"
