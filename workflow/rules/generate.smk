# Guided generation: one job per (large model, method), over the test prompts.
from valueguide.decoding.method import Method

LARGE_MODELS = config["generate"]["large_models"]
METHODS = config["generate"]["methods"]


def method_roles(method):
    """The model roles a method uses: 'value' needs fit_value, 'tuned' needs fit_implicit."""
    return Method.from_config(METHODS[method] or {}).roles()


def generate_inputs(wc):
    inputs = {"cfg": slice_path("generate", model=wc.model, method=wc.method),
              "prompts": f"{R}/prompts/test.parquet",
              "models": world_inputs(config["models"][wc.model]["path"], config["reward_model"],
                                     config["models"][config["fit_implicit"]["untuned"]]["path"])}
    roles = method_roles(wc.method)
    if "value" in roles:
        inputs["value"] = rules.fit_value.output[0]
    if "tuned" in roles:
        inputs["tuned"] = rules.fit_implicit.output[0]
    return inputs


def generate_flags(wc, input):
    flags = []
    if "value" in input.keys():
        flags.append(f"--value {VALUE_DIR}")
    if "tuned" in input.keys():
        flags.append(f"--tuned {IMPLICIT_DIR}")
    return " ".join(flags)


rule generate:
    input:
        unpack(generate_inputs),
    output:
        f"{R}/generations/{{model}}/{{method}}.parquet",
    wildcard_constraints:
        model="|".join(map(re.escape, LARGE_MODELS)),
        method="|".join(map(re.escape, METHODS)),
    params:
        flags=generate_flags,
    threads: 1
    log:
        f"{R}/logs/generate/{{model}}-{{method}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{model}}-{{method}}.tsv"
    shell:
        "{CLI} generate --slice {input.cfg} --model {wildcards.model} --method {wildcards.method} "
        "--prompts {input.prompts} {params.flags} --out {output} --world {WORLD} --threads {threads} 2> {log}"


GENERATIONS = expand(f"{R}/generations/{{model}}/{{method}}.parquet", model=LARGE_MODELS, method=list(METHODS))
