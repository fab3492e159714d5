"""Everything a run can know is wrong before any model loads, found at once.

The Snakefile calls ``check`` right after the config is validated, so a run with a missing model
folder, an empty prompt file, guidance across vocabularies without a candidate set or a judge
without its API key stops before its first job, with one line per problem, instead of a traceback
from the job that meets the problem an hour in. Nothing here loads a model: tiny-world models are
known by the vocabulary their ``world.models`` entry names, other models by their tokenizer files.

Problems of the environment (an API key, a hub snapshot missing offline) are kept apart: a dry run
plans a paper config on a machine that holds neither, and only warns of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import gamed_path, value_spec
from .hub import is_hub_id, offline
from .specs import WORLD_PREFIX, world_name

SAFETENSORS, PICKLED = "*.safetensors", "*.bin"
TABULAR = {"json": "json", "csv": "csv", "parquet": "parquet"}  # datasets builders whose local files we can read


class PreflightError(Exception):
    """Problems found before the run started; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the run cannot start:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Vocabulary:
    """What a model reads text with: a named tiny-world vocabulary, or a tokenizer found on disk."""

    name: str  # for messages: "gpt2", or the folder the tokenizer came from
    tokenizer: object | None = None  # None for tiny-world vocabularies, known by name
    chat: bool = False  # whether it renders the template ``chat``

    def same_as(self, other: "Vocabulary") -> bool:
        if self.tokenizer is None or other.tokenizer is None:
            return self.tokenizer is None and other.tokenizer is None and self.name == other.name
        from .models import same_vocabulary

        return same_vocabulary(self.tokenizer, other.tokenizer)


class _Vocabularies:
    """Each spec's vocabulary, looked up once; None when it cannot be known yet (a hub model not fetched)."""

    def __init__(self, config: dict):
        self.config, self.cache = config, {}

    def of(self, spec: str) -> Vocabulary | None:
        if spec not in self.cache:
            self.cache[spec] = self._lookup(spec)
        return self.cache[spec]

    def _lookup(self, spec: str) -> Vocabulary | None:
        from .vocabularies import CHAT_VOCABULARIES

        world = self.config.get("world") or {}
        name = world_name(spec)
        if name is not None:
            entry = world.get("reward") if name == "reward" else world.get("models", {}).get(name)
            return Vocabulary(entry["vocab"], chat=entry["vocab"] in CHAT_VOCABULARIES) if entry else None
        try:
            from transformers import AutoTokenizer

            local = not is_hub_id(spec)
            tok = AutoTokenizer.from_pretrained(str(Path(spec).expanduser()) if local else spec, local_files_only=True,
                                                trust_remote_code=self.config.get("trust_remote_code", False))
        except Exception:  # no tokenizer on disk: a hub model not fetched yet, or a folder reported apart
            return None
        return Vocabulary(spec, tok, chat=tok.chat_template is not None)


def _method_problems(config: dict, vocabularies: _Vocabularies):
    """Per (large model, method): templates each model can render, and a candidate set across vocabularies."""
    from .decoding.method_spec import Method

    models, fit = config["models"], config["fit_implicit"]
    small = models.get(fit["untuned"], {})
    templates = {"untuned": (small.get("path"), small.get("template")),
                 "value": (value_spec(config)[1], config["fit_value"]["template"])}
    if "fit_classifier" in config:
        templates["classifier"] = (config["fit_classifier"]["backbone"], config["fit_classifier"]["template"])
    for large in config["generate"]["large_models"]:
        guided_entry = models[large]
        guided = vocabularies.of(guided_entry["path"])
        for name, section in config["generate"]["methods"].items():
            where = f"generate.methods.{name} on {large}"
            try:
                method = Method.from_config(section)
            except ValueError as exc:
                yield f"generate.methods.{name}: {exc}"
                continue
            roles = method.roles() & set(templates)
            for role in sorted(roles):
                spec, _ = templates[role]
                theirs = vocabularies.of(spec)
                if guided is None or theirs is None or guided.same_as(theirs):
                    continue
                token = method.token
                if role == "classifier":
                    yield (f"{where}: FUDGE's classifier ({theirs.name}) reads another vocabulary than the guided "
                           f"model ({guided.name}); its token head scores the guided model's next tokens, so both "
                           "must share one vocabulary")
                if role == "untuned" and token.kind == "implicit" and not token.top_k:
                    yield (f"{where}: token-level EFT across vocabularies ({theirs.name} guiding {guided.name}) is "
                           "defined over the guided model's top-k candidates: set token.top_k")
                if role == "value" and token.kind == "explicit" and token.top_k == 0:
                    yield (f"{where}: token-level VAS across vocabularies ({theirs.name} guiding {guided.name}) "
                           "scores the guided model's top-k candidates: token.top_k must be at least 1")
                if token.mask_outside_topk is False and (role, token.kind) in (("untuned", "implicit"),
                                                                               ("value", "explicit")):
                    yield (f"{where}: token.mask_outside_topk: false cannot apply across vocabularies ({theirs.name} "
                           f"guiding {guided.name}): the guide's bonus is defined on the top-k candidates only, "
                           "so the draw is restricted to them; leave mask_outside_topk unset")
    yield from _template_problems(config, vocabularies, templates)


def _template_problems(config: dict, vocabularies: _Vocabularies, templates: dict):
    models = config["models"]
    used = {f"models.{k}.template": (models[k]["path"], models[k]["template"])
            for k in dict.fromkeys([config["sample"]["policy"], *config["generate"]["large_models"]])}
    used["models." + config["fit_implicit"]["untuned"] + ".template"] = templates["untuned"]
    used["fit_value.template"] = templates["value"]
    for where, (spec, template) in used.items():
        vocabulary = vocabularies.of(spec) if template == "chat" else None
        if vocabulary is not None and not vocabulary.chat:
            yield f"{where}: 'chat' needs a chat template, and the tokenizer of {spec} ({vocabulary.name}) has none"


def _pair_problems(config: dict, vocabularies: _Vocabularies):
    fit = config["fit_implicit"]
    if fit["mode"] != "pretrained" or not fit.get("tuned"):
        return
    untuned, tuned = vocabularies.of(config["models"][fit["untuned"]]["path"]), vocabularies.of(fit["tuned"])
    if untuned is not None and tuned is not None and not untuned.same_as(tuned):
        yield (f"fit_implicit.tuned: {fit['tuned']} and the untuned model {fit['untuned']} must share one "
               f"vocabulary (the implicit value is their log-ratio per token)")


def _folder_problems(config: dict):
    """Every local model folder: there, with a config and weights the run may load."""
    from .config import labelled_specs

    allow_bin = config.get("allow_bin_weights", False)
    for where, spec in labelled_specs(config):
        if spec.startswith(WORLD_PREFIX) or is_hub_id(spec):
            continue
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            yield f"{where}: the model folder {spec} does not exist"
        elif not (folder / "config.json").exists():
            yield f"{where}: the model folder {spec} has no config.json"
        elif not any(folder.glob(SAFETENSORS)):
            if any(folder.glob(PICKLED)):
                if not allow_bin:
                    yield (f"{where}: {spec} holds only pickled .bin weights; convert them to safetensors, or set "
                           "allow_bin_weights: true to load them (with torch's weights_only)")
            else:
                yield f"{where}: the model folder {spec} holds no weights (*.safetensors)"


def _prompt_problems(config: dict):
    """Local prompt files: there, readable, with rows and the columns the config names."""
    from .config import prompt_splits

    prompts = config["prompts"]
    if prompts["source"] != "hub":
        return
    for split in prompt_splits(config):
        spec = prompts.get("hub", {}).get(split)
        files = spec and spec.get("data_files")
        if not files or "://" in files or spec["name"] not in TABULAR:
            continue
        where = f"prompts.hub.{split}.data_files"
        path = Path(files).expanduser()
        if not path.is_file():
            yield f"{where}: the prompt file {files} does not exist"
            continue
        try:
            frame = _read_table(path, TABULAR[spec["name"]])
        except Exception as exc:  # pandas raises many kinds for a malformed file
            yield f"{where}: cannot read {files} as {spec['name']}: {type(exc).__name__}: {exc}".rstrip(": ")
            continue
        if frame.empty:
            yield f"{where}: the prompt file {files} holds no rows"
            continue
        missing = sorted({c.split(".")[0] for c in spec["columns"].values()} - set(frame.columns))
        if missing:
            yield f"{where}: {files} has no column(s) {missing}; has {sorted(map(str, frame.columns))}"


def _read_table(path: Path, kind: str):
    import pandas as pd

    if kind == "parquet":
        return pd.read_parquet(path)
    if kind == "csv":
        return pd.read_csv(path)
    text = path.read_text()
    if not text.strip():
        return pd.DataFrame()
    if text.lstrip().startswith("["):
        return pd.DataFrame(json.loads(text))
    return pd.read_json(path, lines=True)


def environment_problems(config: dict) -> list[str]:
    """What the machine the run starts on must hold: the judge's key, hub snapshots when offline."""
    from .config import model_specs
    from .evaluate import API_KEY_VAR

    problems = []
    alpaca = config["evaluate"].get("alpaca") or {}
    if alpaca.get("judge") == "gpt4_turbo" and not os.environ.get(API_KEY_VAR, "").strip():
        problems.append(f"evaluate.alpaca.judge: gpt4_turbo needs the environment variable {API_KEY_VAR} "
                        "(export it, or use judge: local)")
    if offline():
        from huggingface_hub import try_to_load_from_cache

        for spec in model_specs(config):
            if is_hub_id(spec) and not isinstance(try_to_load_from_cache(spec, "config.json"), str):
                problems.append(f"model {spec}: HF_HUB_OFFLINE=1 and it is not in the local hub cache: fetch it "
                                "once with network access (HF_HUB_OFFLINE=0 snakemake ... fetch)")
        gamed = gamed_path(config)
        if gamed and not Path(gamed).exists():
            problems.append(f"evaluate.alpaca.gamed_path: {gamed} is not on disk and HF_HUB_OFFLINE=1: fetch "
                            "alpaca_eval's df_gamed.csv once with network access")
    return problems


def problems(config: dict) -> list[str]:
    """What is wrong with a validated config and the files it names (not the environment)."""
    vocabularies = _Vocabularies(config)
    return [*_folder_problems(config), *_prompt_problems(config), *_pair_problems(config, vocabularies),
            *_method_problems(config, vocabularies)]


def check(config: dict, *, environment: bool = True) -> list[str]:
    """Raise ``PreflightError`` with every problem; return the environment's when it is not checked."""
    found = problems(config)
    unchecked = environment_problems(config)
    if environment:
        found += unchecked
    if found:
        raise PreflightError(found)
    return [] if environment else unchecked


def checked_or_exit(config: dict, *, dry_run: bool = False, files=()) -> dict:
    """The validated config (merged from ``files``, in order), or (a problem found) every problem on
    stderr and exit status 2.

    For the Snakefile: Snakemake would print a traceback for an exception; ``VALUEGUIDE_DEBUG=1``
    asks for it. A dry run only warns of the environment's problems."""
    import sys

    from .config import ConfigError, check_layers, validate_config

    try:
        check_layers(files)
        config = validate_config(config)
        for line in check(config, environment=not dry_run):
            print(f"warning (dry run): {line}", file=sys.stderr)
    except (ConfigError, PreflightError) as exc:
        if os.environ.get("VALUEGUIDE_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return config
