# Evaluation: gold reward of the test generations; AlpacaEval win rates of the alpaca generations.


rule evaluate_reward:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("evaluate_reward"),
        generations=generations("test"),
        models=world_inputs(config["reward_model"]),
    output:
        scores=REWARD_SCORES,
        metrics=REWARD_METRICS,
    log:
        f"{R}/logs/evaluate/reward.log",
    benchmark:
        f"{R}/benchmarks/evaluate/reward.tsv"
    shell:
        "{CLI} evaluate-reward --slice {input.cfg:q} --generations {input.generations:q} "
        "--scores {output.scores:q} --metrics {output.metrics:q} --world {WORLD:q} 2> {log:q}"


rule evaluate_alpaca:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("evaluate_alpaca"),
        generations=generations("alpaca"),
        prompts=f"{R}/prompts/alpaca.parquet",
        models=world_inputs(config["reward_model"]),
    output:
        ALPACA_METRICS,
    threads: 2  # the LC bootstraps of the generators, side by side: the last job of the run
    log:
        f"{R}/logs/evaluate/alpaca.log",
    benchmark:
        f"{R}/benchmarks/evaluate/alpaca.tsv"
    shell:
        "{CLI} evaluate-alpaca --slice {input.cfg:q} --generations {input.generations:q} "
        "--prompts {input.prompts:q} --out {ALPACA_DIR:q} --world {WORLD:q} --threads {threads} 2> {log:q}"
