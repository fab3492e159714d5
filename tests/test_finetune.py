"""Stage finetune: DPO and RL tuning a toy model toward the reward, a killed job that a rerun completes,
and generation from the tuned model with the frozen one beside it as the reference (its config:
tests/test_config.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import toy_generation
from tests.helpers.toy_models import make_gpt2, make_tokenizer
from valueguide import finetune, generate
from valueguide.artifacts import write_parquet
from valueguide.implicit.score import encode_prompts, response_logprobs

ROOT = Path(__file__).resolve().parents[1]


# --- the stage ------------------------------------------------------------------------------------------------------

WORDS = ["good", "bad", "a", "b", "c"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A random tiny gpt2, prompts, and random responses whose reward is their number of "good" tokens."""
    root = tmp_path_factory.mktemp("finetune")
    tok = make_tokenizer()
    make_gpt2(len(tok), seed=0).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(60):
        for _ in range(4):
            words = list(rng.choice(WORDS, size=4))
            rows.append({"prompt_id": pid, "prompt": "the film " + "abcdefgh"[pid % 8],
                         "response_ids": tok.convert_tokens_to_ids(words) + [tok.eos_token_id],
                         "response": " ".join(words), "reward": float(words.count("good"))})
    samples = pd.DataFrame(rows)
    write_parquet(samples, root / "samples.parquet")
    write_parquet(samples.drop_duplicates("prompt_id")[["prompt_id", "prompt"]], root / "prompts.parquet")
    return root, tok


def _config(root: Path, **entry) -> dict:
    entries = {"dpo": {"algorithm": "dpo", "beta": 0.1, "lr": 2e-2, "epochs": 2, "batch_size": 16,
                       "pairs": {"selection": "bradley_terry", "per_prompt": 2}},
               "rl": {"algorithm": "rl", "kl_coef": 0.01, "lr": 3e-2, "steps": 12, "batch_size": 16,
                      "generations_per_prompt": 4}}
    for name, change in entry.items():
        entries[name] = {**entries[name], **change}
    return {"seed": 1, "device": "cpu", "dtype": "auto", "reward_model": "counts-good",
            "models": {"toy": {"path": str(root / "model"), "template": "{prompt}"}},
            "sample": {"policy": "toy", "max_new_tokens": 5}, "finetune": entries}


class CountsGood:
    """The reward of the toy: how many "good" words a text holds."""

    @classmethod
    def load(cls, spec, world_dir=None, options=None):
        assert spec == "counts-good"
        return cls()

    def score(self, texts):
        return np.array([text.split().count("good") for text in texts], dtype=np.float64)


def _good_logprob(model_dir, tok) -> float:
    """Σ log π of four "good" and EOS after each prompt, less that of four "bad": how far the model prefers the reward."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = encode_prompts(tok, "{prompt}", ["the film " + c for c in "abcdefgh"])
    good, bad = (tok.convert_tokens_to_ids([w] * 4) + [tok.eos_token_id] for w in ("good", "bad"))
    return float(np.mean(response_logprobs(model, prompts, [good] * 8) - response_logprobs(model, prompts, [bad] * 8)))


@pytest.mark.slow
def test_dpo_tunes_the_guided_model_toward_the_preferred_responses(toy, tmp_path, capfd):
    root, tok = toy
    out = tmp_path / "dpo" / "toy"
    metrics = finetune.run_finetune(_config(root), "dpo", "toy", root / "samples.parquet", out)
    printed = capfd.readouterr()  # trl's loss logs go to the job's log (stderr), not to a run's console
    assert "'loss'" not in printed.out and "'loss'" in printed.err
    assert metrics["n_pairs"] == 120 and metrics["train_steps"] == 16  # 60 prompts x 2 pairs, 2 epochs of 8 steps
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert _good_logprob(out, tok) - _good_logprob(root / "model", tok) > 1.0


@pytest.mark.slow
def test_rl_tunes_the_guided_model_toward_higher_reward(toy, tmp_path, monkeypatch, capfd):
    root, tok = toy
    monkeypatch.setattr(finetune, "RewardModel", CountsGood)
    out = tmp_path / "rl" / "toy"
    metrics = finetune.run_finetune(_config(root), "rl", "toy", root / "prompts.parquet", out)
    printed = capfd.readouterr()
    assert "'loss'" not in printed.out and "'loss'" in printed.err
    assert metrics["train_steps"] == 12 and metrics["reward_last_log"] > metrics["reward_first_log"]
    assert _good_logprob(out, tok) - _good_logprob(root / "model", tok) > 1.0
    assert (out / "tokenizer.json").exists() and not (out / "adapter_config.json").exists()


@pytest.mark.slow
def test_rl_with_lora_saves_a_plain_model_with_only_the_adapted_weights_changed(toy, tmp_path, monkeypatch):
    root, _ = toy
    monkeypatch.setattr(finetune, "RewardModel", CountsGood)
    out = tmp_path / "rl"
    finetune.run_finetune(_config(root, rl={"steps": 3, "lora": {"r": 4, "alpha": 8}}), "rl", "toy",
                          root / "prompts.parquet", out)
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    frozen = AutoModelForCausalLM.from_pretrained(root / "model").state_dict()
    changed = {name for name in frozen if not torch.equal(tuned[name], frozen[name])}
    assert changed and all(".attn.c_attn." in name for name in changed)  # peft's gpt2 default target


def _finetune_command(tmp_path: Path, root: Path, config: dict, out: Path) -> list[str]:
    """``valueguide finetune`` of the toy's DPO entry on ``config``, as the rule runs it (from a slice)."""
    (tmp_path / "slice.json").write_text(json.dumps(config))
    return [sys.executable, "-m", "valueguide.cli", "finetune", "--slice", str(tmp_path / "slice.json"),
            "--name", "dpo", "--model", "toy", "--samples", str(root / "samples.parquet"), "--out", str(out)]


ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _kill_when(command: list[str], ready, log: Path) -> None:
    """Run ``command`` and SIGKILL it (as a lost node) once ``ready()`` holds, before it ends by itself."""
    with open(log, "w") as stream:
        job = subprocess.Popen(command, stderr=stream, stdout=subprocess.DEVNULL, env=ENV)
        deadline = time.monotonic() + 300
        while not ready() and job.poll() is None:
            assert time.monotonic() < deadline, "the job never got there"
            time.sleep(0.1)
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL, log.read_text()[-3000:]


@pytest.mark.slow
def test_a_killed_job_leaves_no_model_and_the_rerun_completes(toy, tmp_path):
    """Killed mid-training: nothing at the output counts as done; the same command again removes the dead
    job's temporary folder and writes a model that loads."""
    root, _ = toy
    out = tmp_path / "finetuned" / "dpo" / "toy"
    config = _config(root, dpo={"epochs": 40})  # 320 steps: long enough to be killed in training
    log = tmp_path / "killed.log"
    _kill_when(_finetune_command(tmp_path, root, config, out), lambda: "/320 [" in log.read_text(), log)
    assert not (out / "metrics.json").exists() and list(out.parent.glob(".toy.tmp-*"))

    config["finetune"]["dpo"]["epochs"] = 2  # the rerun need not be long: the same code path
    subprocess.run(_finetune_command(tmp_path, root, config, out), check=True, capture_output=True, env=ENV)
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 16
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert not list(out.parent.glob(".toy.tmp-*"))


@pytest.mark.slow
def test_with_checkpoints_the_rerun_goes_on_from_the_last_and_ends_where_an_unbroken_run_does(toy, tmp_path):
    root, _ = toy
    config = _config(root, dpo={"epochs": 40, "checkpoint_steps": 20})  # 320 steps, a checkpoint every 20
    unbroken = tmp_path / "unbroken" / "toy"
    subprocess.run(_finetune_command(tmp_path, root, config, unbroken), check=True, capture_output=True, env=ENV)

    out = tmp_path / "finetuned" / "dpo" / "toy"
    command = _finetune_command(tmp_path, root, config, out)
    _kill_when(command, lambda: any(out.parent.glob(".toy.checkpoints-*/checkpoint-*/trainer_state.json")),
               tmp_path / "killed.log")
    assert not (out / "metrics.json").exists()
    rerun = subprocess.run(command, check=True, capture_output=True, text=True, env=ENV)
    assert re.search(r"Loading model from \S+/checkpoint-\d+", rerun.stderr), rerun.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 320
    assert not list(out.parent.glob(".toy.*"))  # no temporary folder, no checkpoints left
    tuned, reference = (AutoModelForCausalLM.from_pretrained(d).state_dict() for d in (out, unbroken))
    assert all(torch.allclose(tuned[k], reference[k], atol=1e-6) for k in reference)


# --- generation from a tuned model ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_generation.build(tmp_path_factory.mktemp("world"))


def _generate_config(**methods) -> dict:
    config = toy_generation.config()
    config["generate"]["methods"] = methods
    return config


def test_a_finetuned_method_samples_the_tuned_model_with_the_frozen_one_as_reference(world, tmp_path, monkeypatch):
    tuned = tmp_path / "tuned"  # a gpt2 of the toy's vocabulary other than the large one, with its tokenizer
    shutil.copytree(world / "tuned", tuned)
    toy_generation.TOK.save_pretrained(tuned)
    seen = {}
    build = generate.build_decoder

    def spy(method, members, **kwargs):
        seen.update(members)
        return build(method, members, **kwargs)

    monkeypatch.setattr(generate, "build_decoder", spy)
    config = _generate_config(ft={"finetuned": "x"})
    out = generate.run_generate(config, "large", "ft", [(world / "prompts.parquet", tmp_path / "ft.parquet")], world,
                                finetuned_path=tuned)[str(tmp_path / "ft.parquet")]
    assert set(seen) == {"guided", "reference"}
    frozen = AutoModelForCausalLM.from_pretrained(world / "models" / "large").state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in seen["reference"].model.state_dict().items())
    assert not torch.equal(seen["guided"].model.state_dict()["transformer.wte.weight"], frozen["transformer.wte.weight"])
    assert seen["guided"].template == seen["reference"].template == "the film {prompt}"

    # plain sampling from the tuned model: what base gives with the tuned model as the large one
    config = _generate_config(base={})
    config["models"]["large"]["path"] = str(tuned)
    plain = generate.run_generate(config, "large", "base", [(world / "prompts.parquet", tmp_path / "b.parquet")],
                                  world)[str(tmp_path / "b.parquet")]
    assert out["output"].tolist() == plain["output"].tolist()


def test_a_finetuned_method_without_its_model_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="finetune entry 'x'"):
        generate.run_generate(_generate_config(ft={"finetuned": "x"}), "large", "ft",
                              [(world / "prompts.parquet", tmp_path / "ft.parquet")], world)
