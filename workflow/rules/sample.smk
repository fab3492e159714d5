# Samples of the frozen base policy, scored by the reward model: the data every value fit sees.


rule sample:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("sample"),
        prompts=f"{R}/prompts/train.parquet",
        models=world_inputs(config["models"][POLICY]["path"], config["reward_model"]),
    output:
        SAMPLES,
    priority: CHAIN_FIRST
    threads: 1  # beside the world's other models (two threads took 32 s against 44 s, but waited for both cores)
    log:
        f"{R}/logs/sample/{POLICY}.log",
    benchmark:
        f"{R}/benchmarks/sample/{POLICY}.tsv"
    shell:
        "{CLI} sample --slice {input.cfg:q} --prompts {input.prompts:q} --out {output:q} --world {WORLD:q} "
        "--threads {threads} 2> {log:q}"
