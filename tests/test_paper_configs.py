"""The paper configs (config/*.yaml over config.yaml) and the execution profiles, without network or GPU:
each config validates with the paper's settings, plans exactly its jobs, with a GPU on every job that
loads a model; a hub dataset loads by its spec; fetch names everything missing when offline."""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import datasets
import huggingface_hub
import pandas as pd
import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2ForSequenceClassification

from tests.helpers.toy_models import make_tokenizer
from valueguide.config import ConfigError, load_config, model_specs, stage_slice, validate_config
from valueguide.hub import DatasetUnavailableError, fetch, load_prompt_split
from valueguide.plan import jobs_per_stage
from valueguide.reward import RewardModel
from valueguide.specs import ModelNotFoundError
from valueguide.vocabularies import cache_root

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("imdb", "tldr", "alpaca_eval")
SETTINGS = (*TASKS, "vas_hh")  # the IVG paper's tasks with the authors' values, and VAS's own setting
GPU_RULES = {"sample", "fit_value", "diagnose_value", "fit_classifier", "fit_implicit", "finetune", "generate",
             "evaluate_reward", "evaluate_alpaca"}


def paper(task: str, refit: bool = False) -> dict:
    """The task's config with the authors' released values, or (``refit``) every value fitted here."""
    overlay = [ROOT / "config" / f"{task}_refit.yaml"] if refit else []
    return load_config(ROOT / "config.yaml", ROOT / "config" / f"{task}.yaml", *overlay)


def chunks(config: dict) -> dict:
    return {name: (m["chunk"]["W"], m["chunk"]["K"], m["chunk"]["L"])
            for name, m in config["generate"]["methods"].items() if "chunk" in m}


@pytest.mark.parametrize("task", SETTINGS)
def test_a_paper_config_drops_the_tiny_world(task):
    config = paper(task)
    assert config["world"] is None and config["prompts"]["source"] == "hub"
    assert config["device"] == "cuda" and config["seed"] == 1
    assert not [s for s in model_specs(config) if s.startswith("world:")]
    assert config["results_dir"] == f"results/{task}"


# the authors' released values per task: (explicit token value, DPO-tuned small model or None: Tulu's)
AUTHORS = {"imdb": ("chadlzx/gpt2-imdb-token-rm", "chadlzx/gpt2-imdb-dpo"),
           "tldr": ("chadlzx/gpt2-summarize-token-rm", "chadlzx/gpt2-summarize-dpo"),
           "alpaca_eval": ("chadlzx/llama-ultrafeedback-token-rm", "allenai/tulu-2-dpo-7b")}


@pytest.mark.parametrize("task", TASKS)
def test_a_paper_config_runs_the_authors_values_and_its_refit_fits_them_here(task):
    authors, refit = paper(task), paper(task, refit=True)
    value, tuned = AUTHORS[task]
    assert (authors["fit_value"]["mode"], authors["fit_value"]["pretrained"]) == ("pretrained", value)
    assert (authors["fit_implicit"]["mode"], authors["fit_implicit"]["tuned"]) == ("pretrained", tuned)
    assert refit["fit_value"]["mode"] == "train" and refit["results_dir"] == f"results/{task}_refit"
    # the refit changes the values only: the same models, prompts and decoding
    assert refit["fit_implicit"]["mode"] == ("pretrained" if task == "alpaca_eval" else "train")
    for key in ("models", "prompts", "generate", "evaluate", "reward_model", "sample"):
        assert refit[key] == authors[key], key
    assert jobs_per_stage(refit)["fit_value"] == 1 and "fit_value" not in jobs_per_stage(authors)


def test_imdb_has_the_papers_settings():
    config = paper("imdb")
    gen, models = config["generate"], config["models"]
    assert [models[m]["path"] for m in gen["large_models"]] == [
        "openai-community/gpt2", "openai-community/gpt2-large", "openai-community/gpt2-xl"]
    assert {models[m]["template"] for m in gen["large_models"]} == {"Here is a movie review from imdb: {prompt}"}
    assert models[config["fit_implicit"]["untuned"]] == {"path": "lvwerra/gpt2-imdb", "template": "{prompt}"}
    assert config["fit_value"]["head"] == "token" and config["reward_model"] == "lvwerra/distilbert-imdb"
    assert (gen["max_new_tokens"], gen["temperature"], gen["top_k"], gen["top_p"]) == (50, 0.7, 0, 1.0)
    assert set(gen["methods"]) == {"base", "bon", "eft", "vas", "cbs_implicit", "cbs_explicit", "ivg"}
    assert {k: v for k, v in chunks(config).items() if k != "bon"} == dict.fromkeys(
        ["cbs_implicit", "cbs_explicit", "ivg"], (4, 4, 5))
    assert config["prompts"]["hub"]["test"]["name"] == "ZHZisZZ/imdb_preference"


def test_tldr_has_the_papers_settings():
    config = paper("tldr")
    gen, models, test = config["generate"], config["models"], config["prompts"]["hub"]["test"]
    assert (config["prompts"]["n_test"], test["shuffle_seed"], test["split"]) == (1000, 42, "test")
    assert (gen["max_new_tokens"], gen["stop"], gen["temperature"]) == (128, ["\n"], 0.7)
    assert models[config["fit_implicit"]["untuned"]]["template"] == "{prompt}\nTL;DR: "
    for name in gen["large_models"]:  # the few-shot prompt: worked examples, then the post
        template = models[name]["template"]
        assert template.count("TL;DR: ") == 3 and template.endswith("\n\n{prompt}\nTL;DR: ")
    assert config["task"] == "summarization" and config["evaluate"]["reward"]


def test_alpaca_eval_has_the_papers_settings():
    config = paper("alpaca_eval")
    gen, models, alpaca = config["generate"], config["models"], config["evaluate"]["alpaca"]
    assert [models[m]["path"] for m in gen["large_models"]] == [
        "mistralai/Mistral-7B-Instruct-v0.2", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert {models[m]["template"] for m in gen["large_models"]} == {"chat"}
    fit = config["fit_implicit"]
    assert (fit["mode"], models[fit["untuned"]]["path"], fit["tuned"]) == (
        "pretrained", "allenai/tulu-2-7b", "allenai/tulu-2-dpo-7b")
    assert config["prompts"]["n_alpaca"] == 805 and config["prompts"]["hub"]["alpaca"]["columns"] == {
        "prompt": "instruction", "reference": "output"}
    assert chunks(config) == {"cbs_implicit": (2, 2, 30), "cbs_explicit": (2, 2, 30), "ivg": (2, 2, 30),
                              "bon": (1, 4, None)}
    methods = gen["methods"]
    assert set(methods) == {"base", "bon", "eft", "vas", "cbs_implicit", "cbs_explicit", "ivg"}
    # the "with IVG" row: Tulu EFT across vocabularies on the sampling's top-k, in CBS with the explicit value
    assert methods["ivg"]["token"] == methods["eft"]["token"] == {"kind": "implicit", "w": 1.0, "top_k": 50}
    assert methods["ivg"]["chunk"]["scorer"] == "explicit"
    assert (gen["top_p"], gen["temperature"], gen["top_k"]) == (1.0, 0.7, 50)
    assert (alpaca["judge"], alpaca["glm"]) == ("gpt4_turbo", "length_controlled_v1") and alpaca["gamed_path"]
    assert config["fit_value"]["template"] == "<s>\n\nHuman: {prompt}\n\nAssitant:"  # theirs, their spelling
    assert paper("alpaca_eval", refit=True)["fit_value"]["backbone"] == "openai-community/gpt2"
    assert not config["evaluate"]["reward"]


def test_vas_hh_has_the_authors_settings():
    """What tinyllama_hh.py, vas_config.py and vas_trainer.py (idanshen/Value-Augmented-Sampling) run."""
    config = paper("vas_hh")
    models, fit, gen = config["models"], config["fit_value"], config["generate"]
    assert [models[m]["path"] for m in gen["large_models"]] == ["hanseungwook/vas-llama-2-7b-hh-sft"]
    assert models[config["sample"]["policy"]]["path"] == "hanseungwook/vas-llama-2-7b-hh-sft"  # the frozen guided model
    assert config["reward_model"] == "OpenAssistant/reward-model-deberta-v3-large-v2"
    assert (fit["mode"], fit["backbone"], fit["head"]) == ("train", "hanseungwook/vas-tiny-llama-1.1b-hh-sft", "scalar")
    assert (fit["gamma"], fit["lam"], fit["lr"], fit["batch_size"], fit["passes_per_batch"]) == (1.0, 0.95, 1.41e-5, 32, 2)
    assert (fit["lora"]["r"], fit["lora"]["alpha"], fit["warmup_ratio"], fit["max_grad_norm"]) == (16, 16, 0.0, None)
    assert (fit["epochs"], fit["whiten_rewards"]) == (1, False)
    sample, prompts = config["sample"], config["prompts"]
    assert (sample["max_new_tokens"], sample["temperature"], sample["top_k"], sample["top_p"]) == (100, 1.0, 0, 1.0)
    assert prompts["n_train"] * sample["n"] == 160800  # the samples of one pass over hh-rlhf's train split
    for split in ("train", "test"):
        hub = prompts["hub"][split]
        assert (hub["name"], hub["split"], hub["prompt_through_last"]) == ("Anthropic/hh-rlhf", split, "\n\nAssistant:")
    methods = gen["methods"]
    assert methods["vas"] == {"token": {"kind": "explicit", "beta": 3.0, "top_k": 20}}
    assert methods["dpo"] == {"finetuned": "dpo"} and methods["rl"] == {"finetuned": "rl"}
    assert methods["fudge"]["token"]["kind"] == "fudge" and methods["bon"]["chunk"]["scorer"] == "gold"
    tuned = config["finetune"]
    assert (tuned["dpo"]["algorithm"], tuned["rl"]["algorithm"]) == ("dpo", "rl")
    assert tuned["dpo"]["lora"] == tuned["rl"]["lora"] == {"r": 16, "alpha": 16}  # LoRA on the 7B
    assert tuned["rl"]["steps"] * tuned["rl"]["batch_size"] <= prompts["n_train"]  # each prompt at most once


def test_vas_hh_refit_changes_the_value_recipe_only():
    config, refit = paper("vas_hh"), paper("vas_hh", refit=True)
    assert refit["results_dir"] == "results/vas_hh_refit"
    for key in set(config) - {"results_dir", "fit_value"}:
        assert refit[key] == config[key], key
    changed = {k for k in config["fit_value"] if refit["fit_value"][k] != config["fit_value"][k]}
    assert changed == {"epochs", "warmup_ratio", "max_grad_norm"}


def test_without_a_world_only_the_world_models_left_unused_are_allowed():
    config = paper("imdb")
    assert config["models"]["mistral"]["path"] == "world:mistral"  # config.yaml's stand-in, never loaded
    config["generate"]["large_models"] = ["gpt2", "mistral"]
    with pytest.raises(ConfigError, match=r"models.mistral.path: 'world:mistral' names no model .*no world"):
        validate_config(config)


def test_the_prompts_slice_of_a_split_holds_only_its_dataset():
    config = paper("tldr")
    sliced = stage_slice(config, "prompts", split="test")["prompts"]
    assert set(sliced["hub"]) == {"test"} and sliced["n_test"] == 1000 and "n_train" not in sliced


# --- Snakemake plans, with the local GPU profile --------------------------------------------------

# What Snakemake asks of conda to plan a run with `--software-deployment-method conda` (creating an
# environment is not planning: a dry run never does it). No conda can be installed here, so the plans
# are made with this stand-in on PATH; a real run needs a real conda.
STAND_IN_CONDA = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "/nonexistent/conda", "platform": "linux-64"}' ;;
  "--version") echo "conda 25.1.0" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "stand-in conda cannot: $*" >&2; exit 1 ;;
esac
"""


def _dry_run(workdir: Path, task: str | None, profile: Path, refit: bool = False, conda: bool = False) -> str:
    """``snakemake -n`` of config.yaml merged with the task's paper config (none: the tiny world's run)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    extra = []
    if conda:
        bin_dir = workdir / "stand-in-bin"
        bin_dir.mkdir()
        (bin_dir / "conda").write_text(STAND_IN_CONDA)
        (bin_dir / "conda").chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        extra = ["--software-deployment-method", "conda", "--printshellcmds"]
    names = [f"{task}.yaml"] + ([f"{task}_refit.yaml"] if refit else []) if task else []
    configs = ["--configfile", *(str(ROOT / "config" / name) for name in names)] if names else []
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "-s", str(ROOT / "Snakefile"), "--directory",
         str(workdir), "--profile", str(profile), *extra, *configs],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _jobs(output: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every planned job in a dry run's listing but config_slice's (a printf, here)."""
    return [(rule, resources) for rule, resources, _ in _job_blocks(output) if rule != "config_slice"]


def _job_blocks(output: str) -> list[tuple[str, dict, str]]:
    """(rule, resources, listing) of every planned job in a dry run's listing."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block)[1]
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = (item.split("=", 1) for item in found[1].split(", ")) if found else ()
        jobs.append((rule, {k: v for k, v in pairs}, block))
    return jobs


@pytest.fixture(scope="module", params=[(task, refit) for task in SETTINGS for refit in (False, True)],
                ids=lambda p: p[0] + ("_refit" if p[1] else ""))
def planned(request, tmp_path_factory):
    """Each paper config planned with the GPU profile, its jobs in the conda environment."""
    task, refit = request.param
    output = _dry_run(tmp_path_factory.mktemp(task), task, ROOT / "profiles" / "local-gpu", refit, conda=True)
    return task, refit, _jobs(output), output


def test_under_conda_every_job_runs_the_checkout_in_the_environment_file(planned):
    *_, jobs, output = planned
    assert f"Conda environment {ROOT / 'envs' / 'valueguide.yaml'} will be created." in output
    commands = [c for rule, _, block in _job_blocks(output) if rule not in ("all", "config_slice")
                for c in re.findall(r"^Shell command: (.*)$", block, re.M)]
    assert len(commands) == len([rule for rule, _ in jobs if rule != "all"])
    prefix = f"VALUEGUIDE_CACHE={shlex.quote(str(cache_root()))} PYTHONPATH={shlex.quote(str(ROOT / 'src'))} python -m"
    assert all(command.startswith(prefix) for command in commands), commands[0]


def test_the_tiny_worlds_run_plans_under_conda_too(tmp_path):
    output = _dry_run(tmp_path, None, ROOT / "profiles" / "local-gpu", conda=True)
    rules = [rule for rule, _ in _jobs(output)]
    assert "world_corpus" in rules and "report" in rules
    assert f"Conda environment {ROOT / 'envs' / 'valueguide.yaml'} will be created." in output


@pytest.mark.parametrize("task", SETTINGS)
def test_snakemake_refuses_an_overlay_without_its_base(task, tmp_path):
    """Alone, the refit overlay once planned 32 tiny-world jobs into results/<task>_refit."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "-s", str(ROOT / "Snakefile"), "--directory",
         str(tmp_path), "--cores", "1", "--configfile", str(ROOT / "config" / f"{task}_refit.yaml")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"extends {ROOT / 'config' / task}.yaml: merge it over that file" in proc.stderr  # outside the checkout
    assert "Job stats" not in proc.stdout and not (tmp_path / "results").exists()


def test_the_conda_environment_installs_what_the_package_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = yaml.safe_load((ROOT / "envs" / "valueguide.yaml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert pip == declared
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"python={requires.removeprefix('>=')}" in environment["dependencies"]


def _has_rules(*names: str) -> bool:
    text = "".join(path.read_text() for path in (ROOT / "workflow" / "rules").glob("*.smk"))
    return all(f"rule {name}:" in text for name in names)


def test_snakemake_plans_the_jobs_the_plan_command_counts(planned):
    task, refit, jobs, _ = planned
    if task == "vas_hh" and not _has_rules("finetune", "fit_classifier"):
        pytest.skip("VAS's setting needs the rules finetune and fit_classifier (issue 31's other parts)")
    counts = pd.Series([rule for rule, _ in jobs]).value_counts().to_dict()
    assert counts == jobs_per_stage(paper(task, refit))
    # models x methods x shards
    expected_generate = {"imdb": 3 * 7, "tldr": 3 * 7, "alpaca_eval": 2 * 7 * 4, "vas_hh": 1 * 10}[task]
    assert counts["generate"] == expected_generate and counts["fetch"] == 1
    assert not [rule for rule in counts if rule.startswith("world")]


def test_every_job_that_loads_a_model_holds_the_gpu(planned):
    _, _, jobs, _ = planned
    for rule, resources in jobs:
        assert resources.get("gpu") == ("1" if rule in GPU_RULES else None), (rule, resources)
    profile = yaml.safe_load((ROOT / "profiles" / "local-gpu" / "config.yaml").read_text())
    assert profile["resources"] == ["gpu=1"]  # one card: GPU jobs run one at a time


def test_the_slurm_profile_sizes_every_gpu_rule(tmp_path):
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    for rule in GPU_RULES - {"evaluate_alpaca"}:
        res = profile["set-resources"][rule]
        assert res["gpu"] >= 1 and res["gpu_model"] and res["mem_mb"] >= 16000 and res["runtime"] >= 60, rule
    # Snakemake itself must accept the resources: dry-run with them, minus the executor (it would ask a cluster)
    local = tmp_path / "profile"
    local.mkdir()
    (local / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in profile.items() if k != "executor"}))
    jobs = _jobs(_dry_run(tmp_path / "run", "alpaca_eval", local))
    generate = [res for rule, res in jobs if rule == "generate"]
    assert len(generate) == 2 * 7 * 4 and all(r["gpu"] == "1" and r["gpu_model"] == "h100" and r["runtime"] == "720"
                                       for r in generate)
    assert {res["slurm_partition"] for rule, res in jobs if rule == "prompts"} == {"cpu"}


# --- the hub, offline -------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An offline process with an empty hub cache."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    return tmp_path


def test_offline_fetch_names_every_missing_model_and_file(offline, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    snapshot = _hub_snapshot(offline / "hub", "org/cached")
    (snapshot / "config.json").write_text("{}")
    sliced = stage_slice(paper("alpaca_eval"), "fetch")
    assert sliced["hub_models"] == sorted({"mistralai/Mistral-7B-Instruct-v0.2", "mistralai/Mixtral-8x7B-Instruct-v0.1",
                                           "allenai/tulu-2-7b", "allenai/tulu-2-dpo-7b", "chadlzx/llama-ultrafeedback-token-rm",
                                           "OpenAssistant/reward-model-deberta-v3-large-v2"})
    sliced = {**sliced, "hub_models": ["org/cached", *sliced["hub_models"]], "gamed_path": str(offline / "g.csv")}
    with pytest.raises(ModelNotFoundError) as err:
        fetch(sliced)
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message and "org/cached" not in message
    for missing in [*sliced["hub_models"][1:], "df_gamed.csv", "OPENAI_API_KEY"]:
        assert missing in message
    manifest = fetch({"hub_models": ["org/cached"], "gamed_path": None, "judge": "local"})
    assert manifest["models"] == {"org/cached": str(snapshot)}


def test_offline_prompts_name_the_dataset(offline):
    spec = paper("imdb")["prompts"]["hub"]["test"]
    with pytest.raises(DatasetUnavailableError, match="ZHZisZZ/imdb_preference split test .*HF_HUB_OFFLINE"):
        load_prompt_split(spec, 10)


def test_a_hub_split_is_shuffled_deduplicated_cut_and_renamed(offline):
    rows = [{"info": {"post": f"post {i % 6}"}, "summary": f"s{i}"} for i in range(10)]
    data = offline / "rows.json"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"name": "json", "data_files": str(data), "split": "train", "shuffle_seed": 42, "dedupe": True,
            "columns": {"prompt": "info.post", "reference": "summary"}}
    frame = load_prompt_split(spec, 4)
    reference = datasets.Dataset.from_list(rows).flatten().shuffle(seed=42).to_pandas()
    expected = reference.drop_duplicates("info.post").head(4)
    assert frame.prompt_id.tolist() == [0, 1, 2, 3]
    assert frame.prompt.tolist() == expected["info.post"].tolist()
    assert frame.reference.tolist() == expected["summary"].tolist()
    assert len(load_prompt_split({**spec, "dedupe": False, "shuffle_seed": None}, 100)) == 10


def test_an_hh_dialogue_is_cut_after_its_last_assistant_turn(offline):
    """Anthropic/hh-rlhf stores whole dialogues: the prompt is every turn up to the final answer's
    "\\n\\nAssistant:"; a row without one is dropped, and the cut comes before dedupe."""
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: fine"},
            {"chosen": "\n\nHuman: no answer marker"},
            {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: other answer"},
            {"chosen": "\n\nHuman: Assistant: is a word\n\nAssistant: yes"}]
    data = offline / "hh.json"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"name": "json", "data_files": str(data), "split": "train", "columns": {"prompt": "chosen"},
            "prompt_through_last": "\n\nAssistant:", "dedupe": True}
    frame = load_prompt_split(spec, 10)
    assert frame.prompt.tolist() == ["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant:",
                                     "\n\nHuman: Assistant: is a word\n\nAssistant:"]
    assert frame.prompt_id.tolist() == [0, 1]


def _hub_snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot folder of ``repo`` in a hub cache, as a download leaves it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    return folder / "snapshots" / ("0" * 40)


def test_a_deberta_reward_model_loads_from_the_hub_cache_by_its_id(offline):
    """The VAS, TL;DR and AlpacaEval configs' reward model: a DeBERTa-v2 sequence classifier with one logit and a
    sentencepiece tokenizer (spm.model, converted on load), named by its hub id and read offline from the cache."""
    import io

    import sentencepiece
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    repo = "OpenAssistant/reward-model-deberta-v3-large-v2"
    snapshot = _hub_snapshot(offline / "hub", repo)
    spm = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["Human: is the film good? Assistant: the film was good", "it was bad"] * 50),
        model_writer=spm, vocab_size=30, minloglevel=2, character_coverage=1.0, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]")
    (snapshot / "spm.model").write_bytes(spm.getvalue())
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer"}))
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=64, num_labels=1, pad_token_id=0)
    DebertaV2ForSequenceClassification(config).eval().save_pretrained(snapshot)
    texts = ["Human: is the film good? Assistant: the film was good", "it was bad"]
    reward = RewardModel.load(repo)
    tok, model = AutoTokenizer.from_pretrained(str(snapshot)), DebertaV2ForSequenceClassification.from_pretrained(snapshot)
    alone = [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert reward.score(texts) == pytest.approx(alone, abs=1e-5) and alone[0] != pytest.approx(alone[1])


def test_a_one_logit_reward_model_scores_its_logit():
    """The TL;DR and AlpacaEval configs score with a one-logit preference reward model."""
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1,
                                                     n_head=2, num_labels=1, pad_token_id=0)).eval()
    texts = ["good film", "the bad film a b"]
    alone = [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert RewardModel(model, tok).score(texts) == pytest.approx(alone, abs=1e-5)
