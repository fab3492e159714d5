"""Bad input stops before any model loads: one line naming each cause, exit status 2, no traceback.

Each case writes a config (the tiny test config plus a change) and the files it names, then runs
``valueguide validate``, the check the Snakefile runs before its first job. Loading any model during
the check fails the test. test_pipeline.py runs one case through Snakemake on a finished run, to
show that nothing already computed is touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.pipeline_runs import command, env_of_run, write_override
from valueguide import cli, preflight
from valueguide.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
HUB_PROMPTS = {"name": "json", "split": "train", "columns": {"prompt": "instruction"}}


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Any model load during a check is a failure: the check must come first."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded during the up-front check")

    for name in ("AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _folder(path: Path, files=("config.json", "model.safetensors"), vocabulary: str | None = None) -> str:
    """A model folder holding ``files`` (empty: only their names are checked) and a tokenizer."""
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("{}")
    if vocabulary:
        from valueguide import vocabularies

        vocabularies.load(vocabulary).save_pretrained(path)
    return str(path)


def _prompt_source(path: Path, text: str | None) -> dict:
    if text is not None:
        path.write_text(text)
    return {"prompts": {"source": "hub", "hub": {"train": {**HUB_PROMPTS, "data_files": str(path)},
                                                 "test": {**HUB_PROMPTS, "data_files": str(path)}}}}


def _alpaca(judge: str = "local", **more) -> dict:
    return {"evaluate": {"alpaca": {"judge": judge, **more}}}


def _methods(**methods) -> dict:
    return {"generate": {"methods": methods}}


# name: (change merged over the tiny config (a callable gets tmp_path), the cause the error must name)
CASES = {
    "unknown top-level key": ({"temprature": 0.5}, "unknown key(s) ['temprature']"),
    "unknown method option": (_methods(eft={"token": {"kind": "implicit", "wait": 1}}), "generate.methods.eft.token"),
    "wrong type": ({"sample": {"n": "four"}}, "sample.n: 'four' is not of type 'integer'"),
    "whole-number float for an integer": ({"sample": {"n": 2.0}}, "sample.n: 2.0 is not of type 'integer'"),
    "batch size 0": ({"generate": {"batch_size": 0}}, "generate.batch_size: 0 is less than the minimum"),
    "unknown chunk scorer": (_methods(x={"chunk": {"scorer": "oracle", "W": 2, "K": 2, "L": 4}}),
                             "generate.methods.x.chunk.scorer: 'oracle' is not one of"),
    "policy not a model": ({"sample": {"policy": "gpt5"}}, "sample.policy: 'gpt5' is not a key of models"),
    "large model not a model": ({"generate": {"large_models": ["llama"]}}, "'llama' is not a key of models"),
    "every method null": (_methods(**{m: None for m in yaml.safe_load((ROOT / "config.yaml").read_text())
                                      ["generate"]["methods"]}), "every method is null"),
    "nothing evaluated": ({"evaluate": {"reward": False, "alpaca": None}}, "nothing would be evaluated"),
    "world model that the world lacks": ({"models": {"gpt2-large": {"path": "world:gpt9"}}},
                                         "'world:gpt9' names no model of world.models"),
    "world prompts without a world": ({"world": None, "models": {"gpt2-small": {"path": "gpt2"},
                                                                 "gpt2-large": {"path": "gpt2-large"}},
                                       "reward_model": "gpt2", "fit_value": {"backbone": "gpt2"}},
                                      "prompts.source: 'world' needs a world section"),
    "hub prompts without a dataset": ({"prompts": {"source": "hub"}}, "prompts.hub.train: source 'hub' needs"),
    "pretrained pair without the tuned model": ({"fit_implicit": {"mode": "pretrained"}},
                                                "fit_implicit.tuned: mode 'pretrained' needs"),
    "pretrained value without its checkpoint": ({"fit_value": {"mode": "pretrained"}},
                                                "fit_value.pretrained: mode 'pretrained' needs"),
    "more shards than batches": ({"generate": {"shards": 50}}, "generate.shards: 50 shards"),
    "model key with shell metacharacters": ({"models": {"a;touch x": {"path": "gpt2", "template": "{prompt}"}}},
                                            "models: 'a;touch x' does not match"),
    "model folder missing": ({"models": {"gpt2-large": {"path": "./no/such/model"}}},
                             "models.gpt2-large.path: the model folder ./no/such/model does not exist"),
    "relative folder without ./ taken for a hub id": (
        lambda tmp: {"models": {"gpt2-large": {"path": f"{_folder(tmp / 'mine', ())}/large"}}},
        "/mine/large does not exist"),
    "model folder without config.json": (
        lambda tmp: {"models": {"gpt2-large": {"path": _folder(tmp / "m", ("model.safetensors",))}}},
        "has no config.json"),
    "model folder with only pickled weights": (
        lambda tmp: {"models": {"gpt2-large": {"path": _folder(tmp / "m", ("config.json", "pytorch_model.bin"))}}},
        "holds only pickled .bin weights"),
    "model folder without weights": (
        lambda tmp: {"models": {"gpt2-large": {"path": _folder(tmp / "m", ("config.json",))}}},
        "holds no weights"),
    "judge without its API key": (_alpaca("gpt4_turbo"), "gpt4_turbo needs the environment variable OPENAI_API_KEY"),
    "empty prompt file": (lambda tmp: _prompt_source(tmp / "p.json", "[]"), "p.json holds no rows"),
    "blank prompt file": (lambda tmp: _prompt_source(tmp / "p.json", ""), "p.json holds no rows"),
    "missing prompt file": (lambda tmp: _prompt_source(tmp / "p.json", None), "p.json does not exist"),
    "prompt file without the prompt column": (
        lambda tmp: _prompt_source(tmp / "p.json", json.dumps([{"text": "hi"}])), "has no column(s) ['instruction']"),
    "malformed prompt file": (lambda tmp: _prompt_source(tmp / "p.json", "[{"), "cannot read"),
    "EFT across vocabularies without top_k": (
        {"generate": {"large_models": ["mistral"]}},
        "generate.methods.eft on mistral: token-level EFT across vocabularies (gpt2 guiding mistral)"),
    "VAS across vocabularies with top_k 0": (
        {"generate": {"large_models": ["mistral"], "methods": {
            "eft": None, "ivg": None, "vas": {"token": {"kind": "explicit", "top_k": 0}}}}},
        "generate.methods.vas on mistral: token-level VAS across vocabularies"),
    "VAS across vocabularies keeping tokens outside its candidates": (
        {"generate": {"large_models": ["mistral"], "methods": {
            "eft": None, "ivg": None,
            "vas": {"token": {"kind": "explicit", "top_k": 20, "mask_outside_topk": False}}}}},
        "generate.methods.vas on mistral: token.mask_outside_topk: false cannot apply across vocabularies"),
    "FUDGE across vocabularies": (
        {"generate": {"large_models": ["mistral"]}},
        "generate.methods.fudge on mistral: FUDGE's classifier (gpt2) reads another vocabulary than the guided "
        "model (mistral)"),
    "chat template on a tokenizer without one": ({"models": {"gpt2-large": {"template": "chat"}}},
                                                 "models.gpt2-large.template: 'chat' needs a chat template"),
    "tuned model of another vocabulary": (
        lambda tmp: {"fit_implicit": {"mode": "pretrained", "tuned": _folder(tmp / "tuned", vocabulary="mistral")}},
        "fit_implicit.tuned: "),
}


def _run(tmp_path, capsys, change) -> tuple[int, str]:
    change = change(tmp_path) if callable(change) else change
    config = deep_merge(TINY, {"results_dir": str(tmp_path / "results")})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(deep_merge(config, change)))
    code = cli.main(["validate", "--config", str(ROOT / "config.yaml"), str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_bad_input_stops_with_a_line_naming_the_cause(name, tmp_path, capsys):
    change, cause = CASES[name]
    code, err = _run(tmp_path, capsys, change)
    assert code == 2, err
    assert "Traceback" not in err
    header, *problems = err.splitlines()
    assert header.startswith("error: ") and problems, err
    assert all(line.startswith("  ") and ": " in line for line in problems), err  # a line each: "where: what"
    assert any(cause in line for line in problems), err
    assert not (tmp_path / "results").exists()


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    change = deep_merge(_alpaca("gpt4_turbo"), {"models": {"gpt2-large": {"path": "./gone", "template": "chat"},
                                                           "gpt2-xl": {"path": "./gone-too"}},
                                                "generate": {"large_models": ["gpt2-large", "gpt2-xl"]}})
    code, err = _run(tmp_path, capsys, change)
    assert code == 2
    assert [line.split(":")[0].strip() for line in err.splitlines()[1:]] == [
        "models.gpt2-large.path", "models.gpt2-xl.path", "evaluate.alpaca.judge"], err


def test_an_uncached_hub_model_offline_is_named(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(preflight, "offline", lambda: True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code, err = _run(tmp_path, capsys, {"models": {"gpt2-large": {"path": "someone/not-fetched"}}})
    assert code == 2 and "model someone/not-fetched: HF_HUB_OFFLINE=1 and it is not in the local hub cache" in err


def test_a_plan_only_check_warns_of_the_environment_and_passes(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(deep_merge(TINY, _alpaca("gpt4_turbo"))))
    assert cli.main(["validate", "--plan-only", "--config", str(ROOT / "config.yaml"), str(config)]) == 0
    assert "warning (not checked with --plan-only): evaluate.alpaca.judge" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"sample": {"n": 2.0}}))
    with pytest.raises(Exception, match="sample.n"):
        cli.main(["--debug", "validate", "--config", str(ROOT / "config.yaml"), str(config)])


@pytest.mark.parametrize("setting", ["config.yaml", "config/tiny_instruction.yaml"])
def test_the_default_settings_pass_the_check(setting, capsys):
    assert cli.main(["validate", "--config", str(ROOT / "config.yaml"), str(ROOT / setting)]) == 0


BLOCK_MODEL_LIBRARIES = """
import sys

class NoModelLibraries:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "datasets"):
            raise ImportError(f"planning the run imported {name}")

sys.meta_path.insert(0, NoModelLibraries())
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("setting", [None, "config/tiny_instruction.yaml"])
def test_planning_a_run_imports_no_model_library(setting, tmp_path):
    """Snakemake parses the Snakefile at every start, on a cluster twice per job (the job script, then
    its step): the config check and the DAG must not pay for torch or transformers (seconds each)."""
    write_override(tmp_path, setting=setting)
    args = command(tmp_path, "-n")[1:]
    proc = subprocess.run([sys.executable, "-c", BLOCK_MODEL_LIBRARIES, *args], capture_output=True, text=True,
                          env=env_of_run(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Job stats:" in proc.stdout + proc.stderr


NO_MODEL_MODULES = ["valueguide.prompts", "valueguide.world.summary", "valueguide.evaluate.lc",
                    "valueguide.report.tables", "valueguide.report.summary"]
FIRST_TO_IMPORT_A_MODEL_LIBRARY = """
import importlib, sys
import valueguide.cli
for module in sys.argv[1:]:
    importlib.import_module(module)
    if {"torch", "transformers"} & set(sys.modules):
        print(module)
        break
"""


def test_jobs_that_need_no_model_import_no_model_library():
    """The prompts, world-summary and report jobs, and the LC bootstrap's worker processes, each start
    a Python of their own: torch and transformers would cost them seconds of imports apiece. One
    Python imports their modules in turn and names the first that brings either in."""
    proc = subprocess.run([sys.executable, "-c", FIRST_TO_IMPORT_A_MODEL_LIBRARY, *NO_MODEL_MODULES],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"{proc.stdout.strip()} imported torch or transformers"
