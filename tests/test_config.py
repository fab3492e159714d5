"""Config validation: every problem is reported with its key path, before any work starts."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from valueguide.config import ConfigError, deep_merge, load_config, load_setting, stage_slice, validate_config
from valueguide.decoding.method_spec import Method
from valueguide.plan import jobs_per_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_default_config_is_valid(config):
    assert validate_config(config)["device"] == "cpu"


def test_unknown_key_is_named_with_its_path(config):
    config["sample"]["temprature"] = 0.5
    assert "sample: unknown key(s) ['temprature']" in _error(config)


def test_wrong_type_and_missing_field_are_named(config):
    config["fit_value"]["lam"] = "high"
    del config["generate"]["max_new_tokens"]
    message = _error(config)
    assert "fit_value.lam: 'high' is not of type 'number'" in message
    assert "generate: 'max_new_tokens' is missing" in message


def test_nested_method_keys_are_checked(config):
    config["generate"]["methods"]["ivg"]["chunk"]["scorer"] = "oracle"
    assert "generate.methods.ivg.chunk.scorer: 'oracle' is not one of" in _error(config)


def test_dangling_model_reference_is_named(config):
    config["generate"]["large_models"].append("llama")
    at = len(config["generate"]["large_models"]) - 1
    config["models"]["x"] = {"path": "world:gpt5", "template": "{prompt}"}
    message = _error(config)
    assert f"generate.large_models[{at}]: 'llama' is not a key of models" in message
    assert "models.x.path: 'world:gpt5' names no model of world.models" in message


def test_merge_overrides_nested_keys_only(config):
    merged = deep_merge(config, {"sample": {"n": 9}})
    assert merged["sample"]["n"] == 9 and merged["sample"]["policy"] == config["sample"]["policy"]
    assert config["sample"]["n"] != 9  # the base is not mutated


def test_stage_slices_hold_only_what_the_stage_reads(config):
    config = validate_config(config)
    sample = stage_slice(config, "sample")
    assert set(sample) >= {"seed", "sample", "reward_model", "models"} and "generate" not in sample
    changed = copy.deepcopy(config)
    changed["generate"]["temperature"] = 0.1
    assert stage_slice(changed, "sample") == sample
    assert stage_slice(changed, "generate", model="mistral", method="ivg") != stage_slice(
        config, "generate", model="mistral", method="ivg")


def test_only_fudges_generate_slice_reads_the_classifier_and_its_fit_reads_no_generate_setting(config):
    config = validate_config(config)
    assert stage_slice(config, "generate", model="gpt2-large", method="fudge")["fit_classifier"] == {
        "backbone": config["fit_classifier"]["backbone"], "template": config["fit_classifier"]["template"]}
    assert "fit_classifier" not in stage_slice(config, "generate", model="gpt2-large", method="vas")
    fit = stage_slice(config, "fit_classifier")
    assert fit["fit_classifier"] == config["fit_classifier"] and "generate" not in fit and "fit_value" not in fit


def test_fudge_without_a_classifier_section_is_named(config):
    del config["fit_classifier"]
    assert "generate.methods.fudge: token kind fudge needs FUDGE's classifier" in _error(config)


def test_cli_validate_fails_fast_with_the_key_path(tmp_path, config):
    config["fit_value"]["head"] = "vector"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "valueguide.cli", "validate", "--config", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "fit_value.head: 'vector' is not one of ['token', 'scalar']" in proc.stderr


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_the_ivg_weight_ablation_adds_two_methods_and_keeps_the_seven():
    root = Path(__file__).resolve().parents[1]
    base = validate_config(load_config(root / "config.yaml"))
    ablation = validate_config(load_config(root / "config.yaml", root / "config" / "tiny_ivg_w.yaml"))
    methods = ablation["generate"]["methods"]
    assert set(methods) == set(base["generate"]["methods"]) | {"eft_w05", "ivg_w05"}
    assert methods["ivg_w05"]["token"]["w"] == 0.5 and methods["ivg_w05"]["chunk"] == methods["ivg"]["chunk"]
    assert ablation["results_dir"] == base["results_dir"]  # reuses the default run's artifacts


def test_a_whole_number_float_is_not_an_integer(config):
    config["sample"]["n"] = 2.0
    assert "sample.n: 2.0 is not of type 'integer'" in _error(config)


def test_a_run_that_evaluates_nothing_is_refused(config):
    config["evaluate"]["reward"], config["evaluate"]["alpaca"] = False, None
    assert "nothing would be evaluated" in _error(config)


def test_bad_yaml_is_named_with_file_and_line(tmp_path):
    from valueguide.config import ConfigError, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nsample:\n  n: [1, 2\n  temperature: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+, column \d+: not valid YAML"):
        load_config(bad)


def test_threads_are_in_no_stage_slice(config):
    from valueguide.config import stage_slice

    config["threads"] = 2
    for stage in ("sample", "fit_value", "fit_implicit", "evaluate_reward", "report"):
        assert "threads" not in stage_slice(config, stage), stage


# --- settings: what a command merges, overlays, paths that follow results_dir ------------------------

REFITS = sorted((ROOT / "config").glob("*_refit.yaml"))


@pytest.mark.parametrize("overlay", REFITS, ids=lambda p: p.stem)
def test_an_overlay_without_its_base_is_refused_naming_the_base(overlay):
    """Alone, config/imdb_refit.yaml merged over config.yaml would plan the tiny world into results/imdb_refit."""
    base = ROOT / "config" / overlay.name.replace("_refit", "")
    named = rf"extends (\S*/)?config/{re.escape(base.name)}: merge it over that file"
    with pytest.raises(ConfigError, match=named):
        load_config(ROOT / "config.yaml", overlay)
    with pytest.raises(ConfigError, match=named):
        load_config(ROOT / "config.yaml", overlay, base)  # after its overlay, the base would undo it
    assert load_config(ROOT / "config.yaml", base, overlay)["results_dir"] == f"results/{overlay.stem}"


def test_a_command_starts_from_config_yaml_as_snakemake_does():
    """`valueguide plan --config config/alpaca_eval.yaml` once failed with "fit_value: 'gamma' is missing"."""
    proc = subprocess.run([sys.executable, "-m", "valueguide.cli", "plan", "--config", "config/alpaca_eval.yaml"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Jobs per stage" in proc.stdout and "mixtral" in proc.stdout
    from valueguide.config import REPOSITORY_CONFIG, setting_files

    assert setting_files(["config/alpaca_eval.yaml"]) == [REPOSITORY_CONFIG, "config/alpaca_eval.yaml"]
    assert setting_files([ROOT / "config.yaml", "my.yaml"]) == [ROOT / "config.yaml", "my.yaml"]  # not twice


def test_derived_paths_follow_results_dir(tmp_path):
    """A relative world.dir or gamed_path is inside results_dir: a setting run elsewhere brings them along."""
    from valueguide.config import world_dir

    def setting(*paths):
        return load_config(ROOT / "config.yaml", *paths)

    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(f"results_dir: {tmp_path / 'seed2' / 'instruction'}\n")
    instruction = setting(ROOT / "config" / "tiny_instruction.yaml", elsewhere)
    assert world_dir(instruction) == tmp_path / "seed2" / "world"
    assert world_dir(setting(ROOT / "config" / "tiny_instruction.yaml")) == Path("results/world")  # make run's
    assert world_dir(setting(elsewhere)) == tmp_path / "seed2" / "instruction" / "world"
    alpaca = setting(ROOT / "config" / "alpaca_eval.yaml", elsewhere)
    assert stage_slice(alpaca, "fetch")["gamed_path"] == str(tmp_path / "seed2" / "instruction" / "df_gamed.csv")
    refit = setting(ROOT / "config" / "alpaca_eval.yaml", ROOT / "config" / "alpaca_eval_refit.yaml")
    for sliced in (stage_slice(refit, "fetch"), stage_slice(refit, "evaluate_alpaca")["evaluate"]["alpaca"]):
        assert sliced["gamed_path"] == "results/alpaca_eval_refit/df_gamed.csv"


def test_a_slice_is_named_by_its_content_and_an_earlier_flat_one_is_kept(tmp_path):
    """No file is written to name a slice; the flat slice of an earlier version stays when its text is the same."""
    from valueguide.config import slice_location

    first, text = slice_location(tmp_path, "sample", {"sample": {"n": 4}})
    second, _ = slice_location(tmp_path, "sample", {"sample": {"n": 5}})
    assert first != second and Path(first).parent == tmp_path / "sample" and not list(tmp_path.iterdir())
    assert json.loads(text) == {"sample": {"n": 4}}
    (tmp_path / "sample.json").write_text(text)
    assert slice_location(tmp_path, "sample", {"sample": {"n": 4}})[0] == str(tmp_path / "sample.json")
    assert slice_location(tmp_path, "sample", {"sample": {"n": 5}})[0] == second


# --- finetune entries and the methods that sample them (issue 31) ---------------------------------

def test_an_entry_of_the_wrong_algorithm_keys_is_named(config):
    config["finetune"]["dpo"]["kl_coef"] = 0.1
    del config["finetune"]["rl"]["steps"]
    message = _error(config)
    assert "finetune.dpo: unknown key(s) ['kl_coef']" in message
    assert "finetune.rl: 'steps' is missing" in message


def test_an_unknown_algorithm_is_named(config):
    config["finetune"]["ppo"] = {"algorithm": "ppo", "lr": 1e-5}
    assert "finetune.ppo.algorithm: 'ppo' is not one of ['dpo', 'rl']" in _error(config)


def test_a_method_naming_no_entry_is_refused(config):
    config["generate"]["methods"]["sft"] = {"finetuned": "sft"}
    assert "generate.methods.sft.finetuned: 'sft' names no finetune entry (has ['dpo', 'rl'])" in _error(config)


def test_rl_groups_must_fill_the_batch(config):
    config["finetune"]["rl"].update(batch_size=10, generations_per_prompt=4)
    assert "finetune.rl.batch_size: 10 completions per step do not make whole groups" in _error(config)


def test_a_null_entry_is_dropped_and_its_method_must_go_too(config):
    config["finetune"]["rl"] = None
    assert "generate.methods.rl.finetuned: 'rl' names no finetune entry (has ['dpo'])" in _error(config)
    config["generate"]["methods"]["rl"] = None
    assert set(validate_config(config)["finetune"]) == {"dpo"}


def test_a_lora_entry_is_validated_like_the_fits(config):
    config["finetune"]["dpo"]["lora"] = {"r": 8}
    assert "finetune.dpo.lora" in _error(config)
    config["finetune"]["dpo"]["lora"] = {"r": 8, "alpha": 16, "target_modules": ["c_attn"]}
    assert validate_config(config)["finetune"]["dpo"]["lora"]["r"] == 8


def test_a_method_reads_its_finetuned_entry_without_a_new_role():
    method = Method.from_config({"finetuned": "dpo", "token": {"kind": "explicit"}})
    assert method.finetuned == "dpo" and method.roles() == {"value"}
    assert Method.from_config({}).finetuned is None
    with pytest.raises(ValueError, match="finetuned names a finetune entry"):
        Method.from_config({"finetuned": ""})


def test_each_entry_slice_holds_what_its_algorithm_reads(config):
    config = validate_config(config)
    dpo = stage_slice(config, "finetune", name="dpo", model="gpt2-large")
    rl = stage_slice(config, "finetune", name="rl", model="gpt2-large")
    assert dpo["finetune"] == {"dpo": config["finetune"]["dpo"]} and set(dpo["models"]) == {"gpt2-large", "gpt2-small"}
    assert dpo["sample"] == {"policy": "gpt2-small"} and "reward_model" not in dpo
    assert rl["finetune"] == {"rl": config["finetune"]["rl"]} and set(rl["models"]) == {"gpt2-large"}
    assert rl["reward_model"] == "world:reward" and rl["sample"] == {"max_new_tokens": 24}
    changed = copy.deepcopy(config)
    changed["finetune"]["rl"]["steps"] += 1
    changed["sample"]["temperature"] = 0.5  # the samples change: DPO's input file, not its slice
    assert stage_slice(changed, "finetune", name="dpo", model="gpt2-large") == dpo
    assert stage_slice(changed, "finetune", name="rl", model="gpt2-large") != rl


def test_the_plan_counts_a_job_per_sampled_entry_and_guided_model(config):
    config["finetune"]["unused"] = {"algorithm": "rl", "kl_coef": 0.1, "lr": 1e-3, "steps": 1, "batch_size": 4,
                                    "generations_per_prompt": 2}
    assert jobs_per_stage(validate_config(config))["finetune"] == 2 * 2  # dpo, rl x gpt2-large, gpt2-xl


def test_the_instruction_setting_has_no_finetuned_rows():
    config = load_setting(ROOT / "config" / "tiny_instruction.yaml")
    assert not {"dpo", "rl"} & set(config["generate"]["methods"]) and "finetune" not in jobs_per_stage(config)
