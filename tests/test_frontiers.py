"""Frontier sweeps: lists in the config's `frontiers:` section become methods (and finetune entries) at load,
for the Snakefile and every command alike; a bad sweep is refused, naming it, before any work."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_config import ROOT, _error, config  # noqa: F401 (config: the fixture of config.yaml as loaded)
from valueguide.config import load_setting, schema, stage_slice, validate_config
from valueguide.frontiers import expand, plan_sweeps, value_text

SWEEPS = {"vas": {"token.beta": [0.5, 1, 2, 4, 8]}, "bon": {"chunk.K": [1, 2, 4, 8, 16, 32, 64, 128]}}

def test_each_value_adds_a_method_named_by_key_setting_and_value_and_the_bases_value_is_the_base(config):
    base = copy.deepcopy(config["generate"]["methods"])
    config["frontiers"] = SWEEPS
    methods = validate_config(config)["generate"]["methods"]
    added = [m for m in methods if m not in base]
    # vas's own beta is 1 and bon's own K 16: those points are vas and bon themselves, no job runs twice
    assert added == ["vas-beta0.5", "vas-beta2", "vas-beta4", "vas-beta8",
                     "bon-K1", "bon-K2", "bon-K4", "bon-K8", "bon-K32", "bon-K64", "bon-K128"]
    assert {m: methods[m] for m in base} == base
    assert methods["vas-beta0.5"] == {"token": {"kind": "explicit", "beta": 0.5, "top_k": 20}}
    assert methods["bon-K128"] == {"chunk": {**base["bon"]["chunk"], "K": 128}}


def test_the_report_slice_names_the_method_of_every_point_in_the_order_of_the_values(config):
    config["frontiers"] = {"vas": {"token.beta": [8, 0.5, 1]}, "bon": {"chunk.K": [128, 2]}}
    sweeps = stage_slice(validate_config(config), "report")["frontiers"]
    assert sweeps == [
        {"key": "vas", "kind": "method", "setting": "token.beta",
         "points": [{"value": 0.5, "method": "vas-beta0.5"}, {"value": 1, "method": "vas"},
                    {"value": 8, "method": "vas-beta8"}]},
        # the base is a point of its curve at its own value, though the list leaves it out
        {"key": "bon", "kind": "method", "setting": "chunk.K",
         "points": [{"value": 2, "method": "bon-K2"}, {"value": 16, "method": "bon"},
                    {"value": 128, "method": "bon-K128"}]}]
    assert "frontiers" not in stage_slice(validate_config(yaml.safe_load((ROOT / "config.yaml").read_text())), "report")


def test_expanding_twice_changes_nothing(config):
    config["frontiers"] = SWEEPS
    once = validate_config(config)
    assert validate_config(copy.deepcopy(once)) == once


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (1.0, "1"), (128, "128"), (1e-05, "1e-05"), (True, "true"),
                                         (None, "null"), ("implicit", "implicit"), (-2, "-2")])
def test_a_value_is_named_as_written(value, text):
    assert value_text(value) == text


@pytest.mark.parametrize("frontiers, message", [
    ({"vass": {"token.beta": [2]}}, "frontiers.vass: names no method of generate.methods"),
    ({"vas": {"token.betta": [2]}}, "frontiers.vas.token.betta: 'token.betta' is no setting of a method (settings: "
                                    "token.kind, token.w, token.beta"),
    ({"vas": {"token.beta": []}}, "frontiers.vas.token.beta: [] should be non-empty"),
    ({"vas": {}}, "frontiers.vas: {} should be non-empty"),
    ({"bon": {"chunk.K": [2, 2.0]}}, "frontiers.bon.chunk.K: the value 2.0 is given twice"),
    ({"vas": {"token.kind": ["a b"]}}, "frontiers.vas.token.kind: the value 'a b' cannot name a method"),
    ({"bon": {"chunk.K": [0]}}, "generate.methods.bon-K0.chunk.K: 0 is less than the minimum of 1"),
])
def test_a_bad_sweep_is_refused_naming_it(config, frontiers, message):
    config["frontiers"] = frontiers
    assert message in _error(config)


def test_a_point_whose_name_is_a_method_with_other_settings_is_refused(config):
    config["generate"]["methods"]["vas-beta2"] = {"token": {"kind": "implicit", "w": 2.0}}
    config["frontiers"] = {"vas": {"token.beta": [2]}}
    assert "frontiers.vas.token.beta: the point 'vas-beta2' is already a method with other settings" in _error(config)


def test_a_bad_sweep_stops_the_snakefile_before_any_job(config, capsys):
    from valueguide.preflight import checked_or_exit

    config["frontiers"] = {"vas": {"token.betta": [2]}}
    with pytest.raises(SystemExit) as stop:
        checked_or_exit(config, dry_run=True)
    assert stop.value.code == 2 and "frontiers.vas.token.betta" in capsys.readouterr().err


def test_every_command_loads_the_expanded_methods(tmp_path):
    overlay = tmp_path / "sweep.yaml"
    overlay.write_text(yaml.safe_dump({"frontiers": {"vas": {"token.beta": [2]}}}))
    methods = load_setting(overlay)["generate"]["methods"]
    assert "vas-beta2" in methods and len(methods) == len(load_setting()["generate"]["methods"]) + 1
    proc = subprocess.run([sys.executable, "-m", "valueguide.cli", "validate", "--plan-only", "--config", str(overlay)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and f"{len(methods)} method(s)" in proc.stdout, proc.stderr


def _with_finetune(config: dict) -> tuple[dict, dict]:
    """config.yaml's baselines with round settings, on the repository's schema (whose finetune entries
    hold their settings in an allOf per algorithm)."""
    config = copy.deepcopy(config)
    config["finetune"]["dpo"]["beta"], config["finetune"]["rl"]["kl_coef"] = 0.1, 0.1
    assert config["generate"]["methods"]["dpo"] == {"finetuned": "dpo"}
    return config, schema()


def test_a_finetune_entrys_sweep_adds_entries_and_a_method_sampling_each(config):
    config, rules = _with_finetune(config)
    config["frontiers"] = {"dpo": {"beta": [0.1, 0.5]}, "rl": {"kl_coef": [0.05, 0.2]}}
    sweeps, problems = plan_sweeps(config, rules)
    assert problems == []
    out = expand(config, sweeps)
    assert out["finetune"]["dpo-beta0.5"] == {**config["finetune"]["dpo"], "beta": 0.5}
    assert out["finetune"]["rl-kl_coef0.2"] == {**config["finetune"]["rl"], "kl_coef": 0.2}
    assert set(out["finetune"]) == {"dpo", "rl", "dpo-beta0.5", "rl-kl_coef0.05", "rl-kl_coef0.2"}
    assert out["generate"]["methods"]["dpo-beta0.5"] == {"finetuned": "dpo-beta0.5"}
    assert [s.summary() for s in sweeps] == [
        {"key": "dpo", "kind": "finetune", "setting": "beta",  # dpo's own beta: the method sampling dpo plainly
         "points": [{"value": 0.1, "method": "dpo"}, {"value": 0.5, "method": "dpo-beta0.5"}]},
        {"key": "rl", "kind": "finetune", "setting": "kl_coef",
         "points": [{"value": 0.05, "method": "rl-kl_coef0.05"}, {"value": 0.1, "method": "rl"},
                    {"value": 0.2, "method": "rl-kl_coef0.2"}]}]
    assert plan_sweeps(out, rules) == (sweeps, [])  # expanded again: the same


def test_a_finetune_entrys_unknown_setting_is_named_with_the_entrys_settings(config):
    config, rules = _with_finetune(config)
    config["frontiers"] = {"dpo": {"betta": [0.5]}}
    (problem,) = plan_sweeps(config, rules)[1]
    assert problem.startswith("frontiers.dpo.betta: 'betta' is no setting of a finetune entry (settings: algorithm")
    assert all(f" {name}" in problem for name in ("beta", "kl_coef", "lr", "pairs.per_prompt"))


def _plan(workdir: Path, *configs: Path) -> tuple[set[tuple[str, str]], str]:
    """``snakemake -n`` of these config files in ``workdir`` (offline): the (rule, wildcards) of every planned
    job but the config slices', and the listing."""
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", "-s", str(ROOT / "Snakefile"),
                           "--directory", str(workdir), "--cores", "2", "--configfile", *map(str, configs)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
                          cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = set(re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", proc.stdout, re.M))
    return {job for job in jobs if job[0] != "config_slice"}, proc.stdout


@pytest.mark.slow
def test_a_dry_run_plans_a_generation_of_every_point_and_the_frontier_plots(tmp_path):
    frontiers = yaml.safe_load((ROOT / "config" / "frontiers.yaml").read_text())["frontiers"]
    overlay = tmp_path / "sweeps.yaml"  # the file's VAS and best-of-N sweeps (the fine-tuned points: the next test)
    overlay.write_text(yaml.safe_dump({"frontiers": {k: frontiers[k] for k in ("vas", "bon")}}))
    jobs, listing = _plan(tmp_path, ROOT / "config.yaml", overlay)
    generated = {w for rule, w in jobs if rule == "generate"}
    methods = [*load_setting()["generate"]["methods"], "vas-beta0.5", "vas-beta2",
               "vas-beta4", "vas-beta8", "bon-K1", "bon-K2", "bon-K4", "bon-K8", "bon-K32", "bon-K64", "bon-K128"]
    assert generated == {f"model={model}, method={method}" for model in ("gpt2-large", "gpt2-xl") for method in methods}
    for name in ("frontier_kl_gpt2-large", "frontier_kl_gpt2-xl", "frontier_cost_gpt2-large", "frontier_cost_gpt2-xl"):
        assert f"results/report/{name}.png" in listing
    # each generate job books memory by its rows, so that `--resources mem_mb` keeps best-of-128 jobs apart
    rows = load_setting()["generate"]["batch_size"] * 128
    booked = re.search(r"method=bon-K128\n    resources: .*?mem_mb=(\d+)", listing)
    assert booked and int(booked.group(1)) == 1000 + 7 * rows


@pytest.mark.slow
def test_the_frontiers_setting_plans_the_fine_tuned_points_in_its_own_folder(tmp_path):
    jobs, listing = _plan(tmp_path, ROOT / "config.yaml", ROOT / "config" / "frontiers.yaml")
    generated = {w for rule, w in jobs if rule == "generate"}
    for method in ("vas-beta8", "bon-K128", "dpo", "dpo-beta0.5", "rl", "rl-kl_coef0.2"):  # rl: kl_coef 0.05
        assert f"model=gpt2-xl, method={method}" in generated
    tuned = {w for rule, w in jobs if rule == "finetune"}
    assert {"name=dpo-beta0.5, model=gpt2-large", "name=rl-kl_coef0.2, model=gpt2-xl"} <= tuned
    assert "results/frontiers/report/frontier_kl_gpt2-large.png" in listing
    assert "results/frontiers/generations" in listing and "results/world/" in listing
