# The fine-tuned baselines: each finetune entry tunes each guided model it is sampled on (a method with
# `finetuned: NAME`), one job per (entry, model); the tuned model is written whole or not at all.


rule finetune:
    conda:
        CONDA_ENV
    input:
        unpack(finetune_inputs),
    output:
        f"{FINETUNED_DIR}/{{name}}/{{model}}/metrics.json",
    wildcard_constraints:
        name="|".join(map(re.escape, FINETUNE)) or "(?!)",
        model="|".join(map(re.escape, LARGE_MODELS)),
    params:
        data=lambda wc, input: f"--samples {shlex.quote(input.samples)}" if "samples" in input.keys()
        else f"--prompts {shlex.quote(input.prompts)}",
        out=lambda wc, output: os.path.dirname(output[0]),
    threads: 1
    log:
        f"{R}/logs/finetune/{{name}}-{{model}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{name}}-{{model}}.tsv"
    shell:
        "{CLI} finetune --slice {input.cfg:q} --name {wildcards.name:q} --model {wildcards.model:q} {params.data} "
        "--out {params.out:q} --world {WORLD:q} --threads {threads} 2> {log:q}"
