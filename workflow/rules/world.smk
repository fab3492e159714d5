# The tiny offline world: the corpus, one causal LM per name (on a real vocabulary), the gold reward.


rule world_corpus:
    conda:
        CONDA_ENV
    input:
        slice_path("world_corpus") if config.get("world") else [],
    output:
        corpus=f"{WORLD}/corpus.parquet",
    log:
        f"{R}/logs/world/corpus.log",
    benchmark:
        f"{R}/benchmarks/world/corpus.tsv"
    shell:
        "{CLI} build-world corpus --slice {input:q} --world {WORLD:q} 2> {log:q}"


rule world_lm:
    conda:
        CONDA_ENV
    input:
        cfg=lambda wc: slice_path("world_lm", name=wc.name),
        corpus=rules.world_corpus.output.corpus,
    output:
        f"{WORLD}/models/{{name}}/world_stats.json",
    wildcard_constraints:
        name="|".join(WORLD_MODELS) or "^$",
    priority: lambda wc: CHAIN_FIRST if wc.name in CHAIN_MODELS else 0
    threads: 1
    log:
        f"{R}/logs/world/lm-{{name}}.log",
    benchmark:
        f"{R}/benchmarks/world/lm-{{name}}.tsv"
    shell:
        "{CLI} build-world lm --name {wildcards.name:q} --slice {input.cfg:q} --world {WORLD:q} "
        "--threads {threads} 2> {log:q}"


rule world_reward:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("world_reward") if config.get("world") else [],
        corpus=rules.world_corpus.output.corpus,
    output:
        f"{WORLD}/models/reward/world_stats.json",
    priority: CHAIN_FIRST
    threads: 1
    log:
        f"{R}/logs/world/reward.log",
    benchmark:
        f"{R}/benchmarks/world/reward.tsv"
    shell:
        "{CLI} build-world reward --slice {input.cfg:q} --world {WORLD:q} --threads {threads} 2> {log:q}"


rule world_summary:
    conda:
        CONDA_ENV
    input:
        cfg=slice_path("world_summary") if config.get("world") else [],
        models=expand(f"{WORLD}/models/{{name}}/world_stats.json", name=WORLD_MODELS),
        reward=rules.world_reward.output[0],
        samples=f"{R}/samples/{config['sample']['policy']}.parquet",
    output:
        f"{R}/world_summary.json",  # of this setting's base policy, so not in the shared world folder
    log:
        f"{R}/logs/world/summary.log",
    benchmark:
        f"{R}/benchmarks/world/summary.tsv"
    shell:
        "{CLI} world-summary --slice {input.cfg:q} --world {WORLD:q} --samples {input.samples:q} "
        "--out {output:q} 2> {log:q}"
