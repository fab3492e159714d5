# What the rule files share: the run's paths, the settings the rules branch on, and the helpers that
# compute their inputs. Included before every rule file; the Snakefile defines config, R, WORLD,
# CLI and slice_path before it.
from valueguide.config import model_specs, needs_classifier, value_is_pretrained
from valueguide.decoding.method_spec import Method
from valueguide.hub import hub_ids, is_hub_id
from valueguide.specs import world_name

# --- the world (world.smk) and the hub models (fetch.smk) ---
WORLD_MODELS = list((config.get("world") or {}).get("models", {}))
# The run's longest chain goes first (rule priorities): the world models that the base policy's samples
# and the value fits read, the samples, the fits; the other world models train beside them.
CHAIN_FIRST = 10
CHAIN_MODELS = {world_name(spec) for spec in (config["models"][config["sample"]["policy"]]["path"],
                                              config["fit_value"]["backbone"])} - {None}
HUB_MODELS = hub_ids(model_specs(config))
FETCHED = f"{R}/fetch/manifest.json"


def world_inputs(*specs):
    """What a job loading these model specs waits for: the world jobs that build them, and for hub ids
    the fetch manifest (ancient: a refetch does not rerun the jobs after it)."""
    out = []
    for spec in specs:
        name = world_name(spec)
        if name is not None:
            out.append(rules.world_reward.output[0] if name == "reward"
                       else f"{WORLD}/models/{name}/world_stats.json")
        elif is_hub_id(spec):
            out.append(ancient(FETCHED))
    return list(dict.fromkeys(out))


# --- samples of the base policy (sample.smk) and the value fits (fit.smk) ---
POLICY = config["sample"]["policy"]
SAMPLES = f"{R}/samples/{POLICY}.parquet"
VALUE_DIR = f"{R}/value"
# fit_value.mode pretrained: the released checkpoint is the value; no job fits one.
PRETRAINED_VALUE = value_is_pretrained(config)
IMPLICIT_DIR = f"{R}/implicit"
# FUDGE's prefix classifier: fitted only when a method reads it (token kind fudge).
CLASSIFIER_DIR = f"{R}/classifier"
NEEDS_CLASSIFIER = needs_classifier(config)

# --- the fine-tuned baselines (finetune.smk): one job per (finetune entry, guided model) ---
FINETUNE = config["finetune"]
FINETUNED_DIR = f"{R}/finetuned"


def finetune_inputs(wc):
    """DPO reads the base policy's samples (ids in the policy's vocabulary), RL the train prompts and the reward."""
    entry = FINETUNE[wc.name]
    specs = [config["models"][wc.model]["path"]]
    inputs = {"cfg": slice_path("finetune", name=wc.name, model=wc.model)}
    if entry["algorithm"] == "dpo":
        inputs["samples"] = SAMPLES
        specs.append(config["models"][POLICY]["path"])
    else:
        inputs["prompts"] = f"{R}/prompts/train.parquet"
        specs.append(config["reward_model"])
    inputs["models"] = world_inputs(*specs)
    return inputs


# --- guided generation (generate.smk) ---
LARGE_MODELS = config["generate"]["large_models"]
METHODS = config["generate"]["methods"]
# Prompt splits to generate for: the test split (gold reward) and the AlpacaEval-style split.
GEN_SETS = (["test"] if config["evaluate"]["reward"] else []) + (["alpaca"] if config["evaluate"].get("alpaca") else [])
SHARDS = config["generate"].get("shards", 1)
SHARD = f".shard{{shard}}of{SHARDS}" if SHARDS > 1 else ""  # in every generate path: output, log, benchmark


def method_of(name):
    """The parsed method ``generate.methods[name]``: its roles say which fits its generate jobs wait for
    ('value' fit_value unless pretrained, 'tuned' fit_implicit, 'classifier' fit_classifier), ``finetuned``
    the tuned model it guides, its chunk shape the rows it decodes."""
    return Method.from_config(METHODS[name] or {})


def generate_inputs(wc):
    inputs = {"cfg": slice_path("generate", model=wc.model, method=wc.method),
              "prompts": [f"{R}/prompts/{split}.parquet" for split in GEN_SETS],
              "models": world_inputs(config["models"][wc.model]["path"], config["reward_model"],
                                     config["models"][config["fit_implicit"]["untuned"]]["path"])}
    method = method_of(wc.method)
    roles = method.roles()
    if "value" in roles and not PRETRAINED_VALUE:
        inputs["value"] = rules.fit_value.output[0]
    if "tuned" in roles:
        inputs["tuned"] = rules.fit_implicit.output[0]
    if "classifier" in roles:
        inputs["classifier"] = rules.fit_classifier.output[0]
    if method.finetuned:
        inputs["finetuned"] = f"{FINETUNED_DIR}/{method.finetuned}/{wc.model}/metrics.json"
    return inputs


def generate_mem_mb(wc):
    """A generate job's peak memory, roughly, in MB: about 7 MB per decoded row (logits and caches of a
    50k-token vocabulary, measured on the tiny world's best-of-128: 2048 rows, 14.4 GB) above 1 GB. With
    `--resources mem_mb=N` (make run passes 80 % of the machine's memory) big best-of-N jobs do not run
    side by side into the OOM killer; the SLURM profiles set their own."""
    chunk = method_of(wc.method).chunk
    need = 1000 + 7 * config["generate"]["batch_size"] * chunk.W * chunk.K
    limit = workflow.global_resources.get("mem_mb")
    limit = getattr(limit, "value", limit)
    return min(need, limit) if isinstance(limit, int) else need  # a job above the limit runs alone


def generate_flags(wc, input):
    flags = []
    if "value" in input.keys():
        flags.append(f"--value {shlex.quote(VALUE_DIR)}")
    if "tuned" in input.keys():
        flags.append(f"--tuned {shlex.quote(IMPLICIT_DIR)}")
    if "classifier" in input.keys():
        flags.append(f"--classifier {shlex.quote(CLASSIFIER_DIR)}")
    if "finetuned" in input.keys():
        flags.append(f"--finetuned {shlex.quote(os.path.dirname(input.finetuned))}")
    return " ".join(flags)


def generations(split):
    return expand(f"{R}/generations/{split}/{{model}}/{{method}}.parquet", model=LARGE_MODELS, method=list(METHODS))


# --- evaluation (evaluate.smk) and the report (report.smk) ---
REWARD_METRICS = f"{R}/scores/reward_metrics.csv"
REWARD_SCORES = f"{R}/scores/reward_scores.parquet"
ALPACA_DIR = f"{R}/alpaca_eval"
ALPACA_METRICS = f"{ALPACA_DIR}/metrics.csv"
EVALUATIONS = ([REWARD_METRICS, REWARD_SCORES] if config["evaluate"]["reward"] else []) + (
    [ALPACA_METRICS] if config["evaluate"].get("alpaca") else [])
FIGURES = [f"{kind}_{plot}" for kind in (["reward"] if config["evaluate"]["reward"] else [])
           + (["alpaca"] if config["evaluate"].get("alpaca") else []) for plot in ("by_method", "vs_cost", "vs_tokens")]
# With frontier sweeps (valueguide/frontiers.py) and gold reward: two plots per guided model, (file name, caption).
FRONTIER_FIGURES = [(f"frontier_{axis}_{model}", f"frontier_{axis}") for axis in ("kl", "cost")
                    for model in LARGE_MODELS] if config.get("frontiers") and config["evaluate"]["reward"] else []
