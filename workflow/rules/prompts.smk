# Prompt splits of the task.


rule prompts:
    input:
        slice_path("prompts"),
    output:
        f"{R}/prompts/{{split}}.parquet",
    wildcard_constraints:
        split="train|test",
    log:
        f"{R}/logs/prompts/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/prompts/{{split}}.tsv"
    shell:
        "{CLI} prompts --slice {input} --split {wildcards.split} --out {output} 2> {log}"
