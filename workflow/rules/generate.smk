# Guided generation: one job per (large model, method) over every prompt split it serves; with
# generate.shards N > 1, N jobs per (model, method), each a contiguous run of whole batches, then a merge.
from valueguide.decoding.method_spec import Method

LARGE_MODELS = config["generate"]["large_models"]
METHODS = config["generate"]["methods"]
# Prompt splits to generate for: the test split (gold reward) and the AlpacaEval-style split.
GEN_SETS = (["test"] if config["evaluate"]["reward"] else []) + (["alpaca"] if config["evaluate"].get("alpaca") else [])
SHARDS = config["generate"].get("shards", 1)
SHARD = f".shard{{shard}}of{SHARDS}" if SHARDS > 1 else ""  # in every generate path: output, log, benchmark


def method_roles(method):
    """The model roles a method uses: 'value' needs fit_value (unless pretrained), 'tuned' needs fit_implicit."""
    return Method.from_config(METHODS[method] or {}).roles()


def generate_inputs(wc):
    inputs = {"cfg": slice_path("generate", model=wc.model, method=wc.method),
              "prompts": [f"{R}/prompts/{split}.parquet" for split in GEN_SETS],
              "models": world_inputs(config["models"][wc.model]["path"], config["reward_model"],
                                     config["models"][config["fit_implicit"]["untuned"]]["path"])}
    roles = method_roles(wc.method)
    if "value" in roles and not PRETRAINED_VALUE:
        inputs["value"] = rules.fit_value.output[0]
    if "tuned" in roles:
        inputs["tuned"] = rules.fit_implicit.output[0]
    return inputs


def generate_flags(wc, input):
    flags = []
    if "value" in input.keys():
        flags.append(f"--value {shlex.quote(VALUE_DIR)}")
    if "tuned" in input.keys():
        flags.append(f"--tuned {shlex.quote(IMPLICIT_DIR)}")
    return " ".join(flags)


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


def generations(split):
    return expand(f"{R}/generations/{split}/{{model}}/{{method}}.parquet", model=LARGE_MODELS, method=list(METHODS))
