# Value functions fitted from the samples: explicit (TD(lambda) value head) and implicit (DPO pair); and
# FUDGE's prefix classifier (a token head, binary cross-entropy), when a method reads it.


rule fit_value:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("fit_value"),
        samples=SAMPLES,
        models=world_inputs(config["fit_value"]["backbone"], config["models"][POLICY]["path"],
                            config["reward_model"]),
    output:
        f"{VALUE_DIR}/metrics.json",
    priority: CHAIN_FIRST
    threads: 1
    log:
        f"{R}/logs/fit_value/fit_value.log",
    benchmark:
        f"{R}/benchmarks/fit_value/fit_value.tsv"
    shell:
        "{CLI} fit-value --slice {input.cfg:q} --samples {input.samples:q} --out {VALUE_DIR:q} --world {WORLD:q} "
        "--threads {threads} 2> {log:q}"


rule diagnose_value:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("diagnose_value"),
        samples=SAMPLES,
        value=[] if PRETRAINED_VALUE else rules.fit_value.output[0],
    output:
        f"{R}/value_metrics.json",
    threads: 1
    log:
        f"{R}/logs/fit_value/diagnose_value.log",
    benchmark:
        f"{R}/benchmarks/fit_value/diagnose_value.tsv"
    params:
        value="" if PRETRAINED_VALUE else f"--value {shlex.quote(VALUE_DIR)}",
    shell:
        "{CLI} diagnose-value --slice {input.cfg:q} --samples {input.samples:q} {params.value} "
        "--out {output:q} --world {WORLD:q} --threads {threads} 2> {log:q}"


rule fit_implicit:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("fit_implicit"),
        samples=SAMPLES,
        models=world_inputs(config["models"][config["fit_implicit"]["untuned"]]["path"]),
    output:
        f"{IMPLICIT_DIR}/metrics.json",
    priority: CHAIN_FIRST
    threads: 1
    log:
        f"{R}/logs/fit_implicit/fit_implicit.log",
    benchmark:
        f"{R}/benchmarks/fit_implicit/fit_implicit.tsv"
    shell:
        "{CLI} fit-implicit --slice {input.cfg:q} --samples {input.samples:q} --out {IMPLICIT_DIR:q} "
        "--world {WORLD:q} --threads {threads} 2> {log:q}"


if NEEDS_CLASSIFIER:

    rule fit_classifier:
        conda:
            CONDA_ENV
        input:
            cfg=slice_path("fit_classifier"),
            samples=SAMPLES,
            models=world_inputs(config["fit_classifier"]["backbone"], config["models"][POLICY]["path"]),
        output:
            f"{CLASSIFIER_DIR}/metrics.json",
        threads: 1
        log:
            f"{R}/logs/fit_classifier/fit_classifier.log",
        benchmark:
            f"{R}/benchmarks/fit_classifier/fit_classifier.tsv"
        shell:
            "{CLI} fit-classifier --slice {input.cfg:q} --samples {input.samples:q} --out {CLASSIFIER_DIR:q} "
            "--world {WORLD:q} --threads {threads} 2> {log:q}"
