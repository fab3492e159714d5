"""Load, merge and validate the pipeline config; cut it into the slice each stage depends on.

Validation happens before any job starts and names the key path of every problem, so a typo in a
long paper config fails in a second, not after an hour of sampling. Each stage reads only its
slice: the slice files are what Snakemake watches, so changing a parameter reruns exactly the
stages that read it, and what is downstream of them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .frontiers import expand, frontier_summary, plan_sweeps
from .hub import hub_ids
from .specs import world_name


class ConfigError(ValueError):
    """The config is invalid; the message names the key path."""


def schema() -> dict:
    text = resources.files("valueguide").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def deep_merge(base: dict, override: dict) -> dict:
    """Override nested keys of ``base``; a mapping replaces a mapping key by key, anything else whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} does not hold a mapping")
    return data


def load_config(*paths: str | Path) -> dict:
    """Merge config files left to right and validate the result."""
    if not paths:
        raise ConfigError("no config file given")
    check_layers(paths)
    config: dict = {}
    for path in paths:
        config = deep_merge(config, _read(path))
    return validate_config(config)


# The config every setting is merged over, as the Snakefile's `configfile:` (none outside a checkout).
REPOSITORY_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def setting_files(paths) -> list[str | Path]:
    """The files of a setting as Snakemake merges them: the repository's config.yaml first (once)."""
    paths = list(paths)
    if not REPOSITORY_CONFIG.exists() or paths and _same_file(paths[0], REPOSITORY_CONFIG):
        return paths
    return [REPOSITORY_CONFIG, *paths]


def load_setting(*paths: str | Path) -> dict:
    """What the Snakefile runs for ``--configfile PATHS``: config.yaml, then the files in order, validated."""
    return load_config(*setting_files(paths))


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def check_layers(paths) -> None:
    """An overlay (a file with ``extends: BASE``, BASE relative to the overlay's folder) is merged after
    its base, or nothing runs: alone, it would run the tiny world under the overlay's results_dir."""
    for i, path in enumerate(paths):
        base = _read(path).get("extends")
        if base is None:
            continue
        base_path = Path(path).parent / base
        if not any(_same_file(earlier, base_path) for earlier in paths[:i]):
            path, base_path = _shown(path), _shown(base_path)
            raise ConfigError(f"{path} extends {base_path}: merge it over that file (give {base_path} before it)")


def _shown(path: str | Path) -> str:
    """A path as a user in this folder would type it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown key(s) {extra}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is missing")
    return error.message


def _with_defaults(config: dict) -> dict:
    out = copy.deepcopy(config)
    for key, spec in schema()["properties"].items():
        if "default" in spec and key not in out:
            out[key] = spec["default"]
    return out


def _is_integer(checker, instance) -> bool:
    """A whole number written as an integer: 2.0 is a float, and a stage that counts with it would fail."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


def _check_schema(config: dict, rules: dict) -> None:
    errors = sorted(_Validator(rules).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key_path(e)}: {_describe(e)}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))


def validate_config(config: dict) -> dict:
    """Check the schema and the cross-references; return the config with top-level defaults filled and
    the frontier sweeps expanded into methods (valueguide.frontiers)."""
    rules = schema()
    _check_schema(config, rules)
    config = _with_defaults(config)
    methods = config["generate"]["methods"]
    config["generate"]["methods"] = {name: m for name, m in methods.items() if m is not None}
    config["finetune"] = {name: entry for name, entry in config["finetune"].items() if entry is not None}
    sweeps, problems = plan_sweeps(config, rules)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    if sweeps:
        config = expand(config, sweeps)
        _check_schema(config, rules)  # the settings each point gives its method or entry
    problems = list(_reference_problems(config))
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def used_models(config: dict) -> list[str]:
    """Keys of ``models`` the pipeline loads; other entries (say, inherited from config.yaml) are inert."""
    names = [config["sample"]["policy"], config["fit_implicit"]["untuned"], *config["generate"]["large_models"]]
    return list(dict.fromkeys(names))


def labelled_specs(config: dict, names=None) -> list[tuple[str, str]]:
    """(key path, spec) of every model the pipeline loads (of ``models`` entries ``names``, default: the used ones)."""
    models = config["models"]
    names = used_models(config) if names is None else names
    specs = [(f"models.{k}.path", models[k]["path"]) for k in names if k in models]
    specs += [("reward_model", config["reward_model"])]
    if value_spec(config)[1]:
        specs.append(value_spec(config))
    if needs_classifier(config) and "fit_classifier" in config:
        specs.append(("fit_classifier.backbone", config["fit_classifier"]["backbone"]))
    if config["fit_implicit"]["mode"] == "pretrained" and config["fit_implicit"].get("tuned"):
        specs.append(("fit_implicit.tuned", config["fit_implicit"]["tuned"]))
    return specs


def method_roles(section: dict | None) -> set[str]:
    """The model roles of one method's config section (none for a section that does not parse: the
    preflight check names its problem)."""
    from .decoding.method_spec import Method

    try:
        return Method.from_config(section or {}).roles()
    except (ValueError, TypeError):
        return set()


def needs_classifier(config: dict) -> bool:
    """Whether a method reads FUDGE's classifier: only then does stage fit_classifier run."""
    return any("classifier" in method_roles(m) for m in config["generate"]["methods"].values())


def value_is_pretrained(config: dict) -> bool:
    """``fit_value.mode: pretrained``: a released value checkpoint is used as it is, and no job fits one."""
    return config["fit_value"].get("mode", "train") == "pretrained"


def value_spec(config: dict) -> tuple[str, str | None]:
    """(key path, spec) of the explicit value's model: the pretrained checkpoint, or the backbone fitted."""
    if value_is_pretrained(config):
        return "fit_value.pretrained", config["fit_value"].get("pretrained")
    return "fit_value.backbone", config["fit_value"]["backbone"]


def model_specs(config: dict) -> list[str]:
    """The specs of every model the pipeline loads, each once."""
    return list(dict.fromkeys(spec for _, spec in labelled_specs(config)))


def _reference_problems(config: dict):
    models = config["models"]
    refs = [("sample.policy", config["sample"]["policy"]), ("fit_implicit.untuned", config["fit_implicit"]["untuned"])]
    refs += [(f"generate.large_models[{i}]", name) for i, name in enumerate(config["generate"]["large_models"])]
    for where, name in refs:
        if name not in models:
            yield f"{where}: {name!r} is not a key of models (has {sorted(models)})"
    if not config["generate"]["methods"]:
        yield "generate.methods: every method is null; keep at least one"
    if not config["evaluate"]["reward"] and not config["evaluate"].get("alpaca"):
        yield "evaluate: reward is false and alpaca is null, so nothing would be evaluated or reported"
    world = config.get("world")
    world_names = set(world["models"]) | {"reward"} if world else set()
    # Without a world, world: entries left over from config.yaml are inert; only the used ones must resolve.
    for where, spec in labelled_specs(config, names=list(models) if world else None):
        if (name := world_name(spec)) is not None and name not in world_names:
            yield f"{where}: {spec!r} names no model of world.models (has {sorted(world_names) or 'no world'})"
    if "fit_classifier" not in config:
        for name, method in config["generate"]["methods"].items():
            if "classifier" in method_roles(method):
                yield f"generate.methods.{name}: token kind fudge needs FUDGE's classifier: add a fit_classifier section"
    if config["fit_implicit"]["mode"] == "pretrained" and not config["fit_implicit"].get("tuned"):
        yield "fit_implicit.tuned: mode 'pretrained' needs the spec of the tuned model"
    yield from _finetune_problems(config)
    if value_is_pretrained(config) and not config["fit_value"].get("pretrained"):
        yield "fit_value.pretrained: mode 'pretrained' needs the spec of the value checkpoint"
    if config["evaluate"].get("alpaca") and not config["prompts"].get("n_alpaca"):
        yield "prompts.n_alpaca: evaluate.alpaca needs the alpaca split's size"
    if config["prompts"]["source"] == "world" and not world:
        yield "prompts.source: 'world' needs a world section"
    shards, size = config["generate"].get("shards", 1), config["generate"]["batch_size"]
    for split in prompt_splits(config)[1:]:  # the splits generate reads
        batches = -(-config["prompts"].get(f"n_{split}", 0) // size)
        if shards > batches:
            yield f"generate.shards: {shards} shards of the {split} split's {batches} batch(es) would leave some empty"
    if config["prompts"]["source"] == "hub":
        for split in prompt_splits(config):
            if split not in config["prompts"].get("hub", {}):
                yield f"prompts.hub.{split}: source 'hub' needs the dataset of every split the run uses"


def _finetune_problems(config: dict):
    entries = config["finetune"]
    for name, method in config["generate"]["methods"].items():
        if method.get("finetuned") is not None and method["finetuned"] not in entries:
            yield (f"generate.methods.{name}.finetuned: {method['finetuned']!r} names no finetune entry "
                   f"(has {sorted(entries) or 'none'})")
    for name, entry in entries.items():
        if entry["algorithm"] == "rl" and entry["batch_size"] % entry["generations_per_prompt"]:
            yield (f"finetune.{name}.batch_size: {entry['batch_size']} completions per step do not make whole groups "
                   f"of generations_per_prompt {entry['generations_per_prompt']}")


def prompt_splits(config: dict) -> list[str]:
    """The prompt splits a run reads: train (sampling), test (gold reward), alpaca (AlpacaEval)."""
    return ["train"] + (["test"] if config["evaluate"]["reward"] else []) + (
        ["alpaca"] if config["evaluate"].get("alpaca") else [])


def in_results(config: dict, path: str | Path) -> Path:
    """A path of the config, a relative one inside ``results_dir``: it follows the results elsewhere."""
    return Path(os.path.normpath(Path(config["results_dir"]) / path))


def world_dir(config: dict) -> Path:
    """Where the tiny world is built and kept: ``world.dir`` (relative: inside results_dir), default ``world``."""
    return in_results(config, (config.get("world") or {}).get("dir") or "world")


def gamed_path(config: dict) -> str | None:
    """alpaca_eval's df_gamed.csv: ``evaluate.alpaca.gamed_path`` (relative: inside results_dir), or None."""
    gamed = (config["evaluate"].get("alpaca") or {}).get("gamed_path")
    return str(in_results(config, gamed)) if gamed else None


# What every stage's outputs depend on. Not threads: every rule passes its own (--threads), and a
# thread count changes at most the last bits of a float sum, not what a stage computes: no rerun.
_RUNTIME = ("seed", "device", "dtype", "device_map", "trust_remote_code", "allow_bin_weights")


def _pick(config: dict, *keys: str) -> dict:
    return {k: copy.deepcopy(config[k]) for k in (*_RUNTIME, *keys) if k in config}


def stage_slice(config: dict, stage: str, **wildcards: str) -> dict:
    """The part of the config that ``stage`` reads, in the same shape as the full config."""
    models = config["models"]
    if stage == "world_corpus":
        world = {k: config["world"][k] for k in ("n_reviews",)}
        return {"seed": config["seed"], "world": world}
    if stage == "world_lm":
        world = {k: config["world"][k] for k in ("n_reviews", "pretrain")}
        world["models"] = {wildcards["name"]: config["world"]["models"][wildcards["name"]]}
        return {"seed": config["seed"], "world": world}
    if stage == "world_reward":
        world = {k: config["world"][k] for k in ("n_reviews", "reward")}
        return {"seed": config["seed"], "world": world}
    if stage == "world_summary":
        return {"world": {"models": config["world"]["models"]}, "sample": {"policy": config["sample"]["policy"]}}
    if stage == "prompts":  # one slice per split: resizing one split leaves the others cached
        split = wildcards["split"]
        prompts = {k: v for k, v in config["prompts"].items()
                   if not k.startswith("n_") and k != "hub" or k == f"n_{split}"}
        if split in config["prompts"].get("hub", {}):
            prompts["hub"] = {split: config["prompts"]["hub"][split]}
        return {**_pick(config, "task"), "prompts": prompts}
    if stage == "sample":
        out = _pick(config, "sample", "reward_model")
        out["models"] = {config["sample"]["policy"]: models[config["sample"]["policy"]]}
        return out
    if stage in ("fit_value", "diagnose_value"):  # diagnostics settings (fit_value.eval) rerun no fit
        out = _pick(config, "sample", "reward_model", "fit_value")
        if stage == "fit_value":
            out["fit_value"].pop("eval", None)
        out["models"] = {config["sample"]["policy"]: models[config["sample"]["policy"]]}
        return out
    if stage == "fit_classifier":
        out = _pick(config, "fit_classifier")
        out["sample"] = {"policy": config["sample"]["policy"]}  # the vocabulary the samples' ids are in
        out["models"] = {config["sample"]["policy"]: models[config["sample"]["policy"]]}
        return out
    if stage == "fit_implicit":
        out = _pick(config, "fit_implicit")
        out["sample"] = {"policy": config["sample"]["policy"]}  # the vocabulary the samples' ids are in
        out["models"] = {k: models[k] for k in (config["fit_implicit"]["untuned"], config["sample"]["policy"])}
        return out
    if stage == "finetune":  # one entry on one guided model; DPO reads the samples, RL the reward model
        name, model = wildcards["name"], wildcards["model"]
        entry = config["finetune"][name]
        out = _pick(config)
        out["finetune"] = {name: copy.deepcopy(entry)}
        if entry["algorithm"] == "dpo":
            policy = config["sample"]["policy"]
            out["sample"] = {"policy": policy}  # the vocabulary the samples' ids are in
            out["models"] = {k: models[k] for k in (model, policy)}
        else:
            out["reward_model"] = config["reward_model"]
            out["sample"] = {"max_new_tokens": config["sample"]["max_new_tokens"]}
            out["models"] = {model: models[model]}
        return out
    if stage == "generate":
        model, method = wildcards["model"], wildcards["method"]
        out = _pick(config, "reward_model")
        out["fit_implicit"] = {k: config["fit_implicit"].get(k) for k in ("mode", "untuned", "tuned")}
        out["fit_value"] = {k: config["fit_value"].get(k) for k in ("mode", "pretrained", "backbone", "template")}
        # shards only cuts the work into jobs: the shard job gets its index on the command line
        skip = ("methods", "large_models", "shards")
        out["generate"] = {k: v for k, v in config["generate"].items() if k not in skip}
        out["generate"]["large_models"] = [model]
        out["generate"]["methods"] = {method: config["generate"]["methods"][method]}
        if "classifier" in method_roles(config["generate"]["methods"][method]):
            out["fit_classifier"] = {k: config["fit_classifier"][k] for k in ("backbone", "template")}
        untuned = config["fit_implicit"]["untuned"]
        out["models"] = {model: models[model], untuned: models[untuned]}
        return out
    if stage == "fetch":
        alpaca = config["evaluate"].get("alpaca") or {}
        return {"hub_models": hub_ids(model_specs(config)), "gamed_path": gamed_path(config),
                "judge": alpaca.get("judge"), "allow_bin_weights": config.get("allow_bin_weights", False)}
    if stage == "evaluate_reward":  # the methods: how each one's KL from the frozen model is known
        return {**_pick(config, "reward_model"), "generate": {"methods": config["generate"]["methods"]}}
    if stage == "evaluate_alpaca":
        out = _pick(config, "reward_model", "evaluate")
        out["generate"] = {"methods": config["generate"]["methods"]}
        if (out["evaluate"].get("alpaca") or {}).get("gamed_path"):
            out["evaluate"]["alpaca"]["gamed_path"] = gamed_path(config)
        return out
    if stage == "report":
        out = {"task": config["task"], "evaluate": {"paper_names": config["evaluate"].get("paper_names", {})}}
        sweeps = frontier_summary(config, schema())  # which method runs each point of a sweep
        return {**out, "frontiers": sweeps} if sweeps else out
    raise KeyError(f"no config slice for stage {stage!r}")


def slice_location(folder: str | Path, name: str, data: Any) -> tuple[str, str]:
    """Where the slice ``name`` with this content lives, and its text: ``FOLDER/NAME/DIGEST.json``, named
    by its content, so a changed slice is a new file that a job writes (nothing is written while the
    DAG is built or in a dry run) and a file never changes under a job that reads it. A flat
    ``FOLDER/NAME.json`` of an earlier version that holds the same text is kept: its results stay cached."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    flat = Path(folder) / f"{name}.json"
    if flat.is_file() and flat.read_text() == text:
        return str(flat), text
    return f"{folder}/{name}/{hashlib.sha256(text.encode()).hexdigest()[:16]}.json", text
