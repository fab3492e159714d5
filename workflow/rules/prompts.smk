# Prompt splits of the task.


rule prompts:
    conda:
        CONDA_ENV
    input:
        lambda wc: slice_path("prompts", split=wc.split),
    output:
        f"{R}/prompts/{{split}}.parquet",
    wildcard_constraints:
        split="train|test|alpaca",
    log:
        f"{R}/logs/prompts/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/prompts/{{split}}.tsv"
    shell:
        "{CLI} prompts --slice {input:q} --split {wildcards.split:q} --out {output:q} 2> {log:q}"
