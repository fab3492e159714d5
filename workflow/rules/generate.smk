# Guided generation: one job per (large model, method) over every prompt split it serves; with
# generate.shards N > 1, N jobs per (model, method), each a contiguous run of whole batches, then a merge.


rule generate:
    conda:
        CONDA_ENV
    input:
        unpack(generate_inputs),
    output:
        [f"{R}/generations/{split}/{{model}}/{{method}}{SHARD}.parquet" for split in GEN_SETS],
    wildcard_constraints:
        model="|".join(map(re.escape, LARGE_MODELS)),
        method="|".join(map(re.escape, METHODS)),
        shard=r"\d+",
    params:
        flags=generate_flags,
        shard=lambda wc: f"--shard {wc.shard} {SHARDS}" if SHARDS > 1 else "",
    threads: 1
    resources:
        mem_mb=generate_mem_mb,
    log:
        f"{R}/logs/generate/{{model}}-{{method}}{SHARD}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{model}}-{{method}}{SHARD}.tsv"
    shell:
        "{CLI} generate --slice {input.cfg:q} --model {wildcards.model:q} --method {wildcards.method:q} "
        "--prompts {input.prompts:q} {params.flags} {params.shard} --out {output:q} --world {WORLD:q} "
        "--threads {threads} 2> {log:q}"


if SHARDS > 1:

    rule merge_shards:
        conda:
            CONDA_ENV
        input:
            [f"{R}/generations/{split}/{{model}}/{{method}}.shard{i}of{SHARDS}.parquet"
             for split in GEN_SETS for i in range(SHARDS)],
        output:
            [f"{R}/generations/{split}/{{model}}/{{method}}.parquet" for split in GEN_SETS],
        wildcard_constraints:
            model="|".join(map(re.escape, LARGE_MODELS)),
            method="|".join(map(re.escape, METHODS)),
        log:
            f"{R}/logs/generate/{{model}}-{{method}}.merge.log",
        benchmark:
            f"{R}/benchmarks/generate/{{model}}-{{method}}.merge.tsv"
        shell:
            "{CLI} merge-shards --count {SHARDS} --out {output:q} 2> {log:q}"
