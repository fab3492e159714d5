"""Fitting the value model: inputs, loss, schedule, split, a learning smoke test, the diagnostics
and the whole stage on a toy world."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from tests.helpers.toy_models import TOY_WORDS, make_gpt2, make_tokenizer
from valueguide.artifacts import ArtifactError, write_parquet
from valueguide.sampling import SamplingParams
from valueguide.value.diagnostics import choose_cuts, pairwise_accuracy, rollout_values, value_error
from valueguide.value.classifier import run_fit_classifier
from valueguide.value.fit import (PREFIX_LABELS, classification_metrics, fit_value, linear_schedule, prefix_bce_loss,
                                  run_diagnose_value, run_fit_value, split_by_prompt, value_loss)
from valueguide.value.model import ValueModel, encode_prompt, predict_last, value_examples

TOK = make_tokenizer()
OTHER_TOK = make_tokenizer(list(reversed(TOY_WORDS)))  # same words, other ids
FIT_CFG = {"template": "{prompt}", "gamma": 1.0, "lam": 0.95, "lr": 3e-3, "batch_size": 32, "epochs": 4,
           "passes_per_batch": 1, "warmup_ratio": 0.05, "max_grad_norm": 1.0, "whiten_rewards": False}



def synthetic_samples(n_prompts: int, seed: int, tokenizer=TOK, per_prompt: int = 4) -> pd.DataFrame:
    """Responses of 1–6 words; reward = number of "good" tokens (EOS ends half of them)."""
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "a", "b", "c", "film"]
    rows = []
    for pid in range(n_prompts):
        prompt = " ".join(rng.choice(["the", "film", "d", "e", "f"], size=rng.integers(1, 4)))
        for k in range(per_prompt):
            response = list(rng.choice(words, size=rng.integers(1, 7), p=[0.25, 0.15, 0.15, 0.15, 0.15, 0.15]))
            finished = bool(rng.random() < 0.5)
            ids = tokenizer.convert_tokens_to_ids(response) + ([tokenizer.eos_token_id] if finished else [])
            rows.append({"prompt_id": pid, "prompt": prompt, "sample_idx": k, "response": " ".join(response),
                         "response_ids": ids, "finished": finished, "reward": float(response.count("good")),
                         "logprobs": [-1.0] * len(ids)})
    return pd.DataFrame(rows)


def tiny_value_model(head: str = "token") -> ValueModel:
    torch.manual_seed(0)
    return ValueModel(make_gpt2(len(TOK), n_layer=1, n_embd=32).transformer, head)


# --- inputs ------------------------------------------------------------------------------------


def test_inputs_reuse_ids_on_a_shared_vocabulary_and_retokenise_otherwise():
    policy_ids = OTHER_TOK.convert_tokens_to_ids(["good", "a", "<eos>"])
    same = value_examples(["the film"], [policy_ids], [2.0], OTHER_TOK, "{prompt}", OTHER_TOK)[0]
    assert same.ids == OTHER_TOK.convert_tokens_to_ids(["the", "film"]) + policy_ids
    assert (same.n_response, same.reward) == (3, 2.0)
    # another vocabulary reads template and response text as one text (here joined by the template's space)
    other = value_examples(["the film"] * 2, [policy_ids, policy_ids[:2]], [2.0, 1.0], TOK, "{prompt} ", OTHER_TOK)
    assert other[0].ids == TOK.convert_tokens_to_ids(["the", "film", "good", "a", "<eos>"])
    assert other[1].ids == TOK.convert_tokens_to_ids(["the", "film", "good", "a"])  # not finished: no EOS
    assert (other[0].n_response, other[1].n_response) == (3, 2)
    with pytest.raises(ValueError, match="renders to no tokens"):
        encode_prompt(TOK, "{prompt}", "")


def test_value_loss_is_half_the_masked_mean_square():
    q = torch.tensor([[1.0, 2.0, 5.0], [3.0, 0.0, 0.0]])
    targets = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert value_loss(q, targets, mask).item() == pytest.approx(0.5 * (1 + 4 + 4) / 3)


def test_linear_schedule_warms_up_then_decays_to_zero():
    factor = linear_schedule(total_steps=10, warmup_steps=2)
    assert [factor(s) for s in range(10)] == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_split_keeps_each_prompt_on_one_side():
    samples = synthetic_samples(50, seed=0)
    train, held = split_by_prompt(samples, 0.1, seed=3)
    assert held.prompt_id.nunique() == 5 and len(train) + len(held) == len(samples)
    assert not set(train.prompt_id) & set(held.prompt_id)
    assert split_by_prompt(samples, 0.1, seed=3)[1].equals(held)
    assert split_by_prompt(samples, 0.0, seed=3)[1].empty


# --- fitting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["token", "scalar"])
def test_fit_learns_a_token_counting_reward(head):
    samples = synthetic_samples(150, seed=1)
    train, held = split_by_prompt(samples, 0.2, seed=0)
    model = tiny_value_model(head)
    history = fit_value(train, {**FIT_CFG, "epochs": 6}, TOK, model, seed=0, heldout=held)
    assert len(history["steps"]) == 6 * int(np.ceil(len(train) / 32))
    mse = [e["heldout_terminal_mse"] for e in history["epochs"]]
    assert mse[-1] < 0.5 * mse[0]
    examples = value_examples(held.prompt, held.response_ids, held.reward, TOK, "{prompt}")
    terminal = predict_last(model, examples, TOK.pad_token_id)
    accuracy, n_pairs = pairwise_accuracy(held.prompt_id, terminal, held.reward, np.random.default_rng(0))
    assert n_pairs > 100 and accuracy > 0.8  # chance is 0.5


def test_fit_is_reproducible_and_whitening_is_folded_back():
    samples = synthetic_samples(30, seed=2).assign(reward=lambda df: 10 * df.reward + 50)
    cfg = {**FIT_CFG, "epochs": 2, "whiten_rewards": True, "lam": 0.5, "passes_per_batch": 2}
    first, model = fit_value(samples, cfg, TOK, tiny_value_model(), seed=7), tiny_value_model()
    second = fit_value(samples, cfg, TOK, model, seed=7)
    assert [s["loss"] for s in first["steps"]] == [s["loss"] for s in second["steps"]]
    assert second["reward_whitening"]["mean"] == pytest.approx(samples.reward.mean())
    examples = value_examples(samples.prompt, samples.response_ids, samples.reward, TOK, "{prompt}")
    predicted = predict_last(model, examples, TOK.pad_token_id)
    assert abs(predicted.mean() - samples.reward.mean()) < 0.5 * samples.reward.std()  # reward units


def test_whitening_is_exact_in_reward_units():
    """Whitened targets of rewards r and 10 r + 50 are the same, so the two fits train one model; folded
    back, its values must be 10 v + 50 of the first's: the scale (std) and the shift (mean) both count."""
    samples = synthetic_samples(30, seed=2)
    cfg = {**FIT_CFG, "epochs": 1, "whiten_rewards": True}
    examples = value_examples(samples.prompt, samples.response_ids, samples.reward, TOK, "{prompt}")
    values = []
    for rewards in (samples.reward, 10 * samples.reward + 50):
        model = tiny_value_model()
        fit_value(samples.assign(reward=rewards), cfg, TOK, model, seed=7)
        values.append(predict_last(model, examples, TOK.pad_token_id))
    assert np.allclose(values[1], 10 * values[0] + 50, atol=1e-3)
    assert values[0].std() > 1e-3  # not a constant


def test_fit_refuses_empty_samples():
    with pytest.raises(ValueError, match="no samples"):
        fit_value(synthetic_samples(1, seed=0).iloc[:0], FIT_CFG, TOK, tiny_value_model(), seed=0)


# --- FUDGE's classifier: the same loop, a label on every prefix --------------------------------------


def test_prefix_bce_is_the_masked_mean_cross_entropy():
    logits = torch.tensor([[0.0, 2.0, 7.0], [-1.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    want = (np.log(2) + np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(-1.0))) / 3
    assert prefix_bce_loss(logits, labels, mask).item() == pytest.approx(want)


def test_classification_metrics_count_signs_and_ranked_pairs():
    metrics = classification_metrics(np.array([2.0, -1.0, 0.5, 0.5]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert metrics == {"heldout_accuracy": 0.75, "heldout_auc": pytest.approx(3.5 / 4)}  # the tie counts half


def test_the_prefix_classifier_learns_a_label_that_one_token_decides():
    """Label: whether the response holds "good"; every prefix of a response carries its label."""
    samples = synthetic_samples(150, seed=3)
    samples["reward"] = samples.response.str.split().map(lambda words: float("good" in words))
    train, held = split_by_prompt(samples, 0.2, seed=0)
    model = tiny_value_model("token")
    history = fit_value(train, {**FIT_CFG, "epochs": 6}, TOK, model, seed=0, heldout=held, objective=PREFIX_LABELS)
    first, last = history["epochs"][0], history["epochs"][-1]
    assert 0.3 < held.reward.mean() < 0.7 and last["train_loss"] < first["train_loss"]
    assert last["heldout_accuracy"] > 0.95 and last["heldout_auc"] > 0.98


def test_run_fit_classifier_labels_by_the_median_and_writes_a_token_head(tmp_path):
    config = toy_world(tmp_path)
    config["fit_classifier"] = {k: config["fit_value"][k] for k in ("backbone", "template", "lr", "batch_size",
                                                                    "epochs", "heldout_fraction")}
    samples = synthetic_samples(16, seed=5, tokenizer=OTHER_TOK)
    write_parquet(samples, tmp_path / "samples.parquet")
    out = tmp_path / "results" / "classifier"
    metrics = run_fit_classifier(config, tmp_path / "samples.parquet", out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["threshold"] == samples.reward.median()
    assert metrics["positive_fraction"] == pytest.approx((samples.reward > samples.reward.median()).mean())
    assert {"heldout_accuracy", "heldout_auc"} <= set(metrics) and metrics["n_heldout_prompts"] == 4
    loaded = ValueModel.from_pretrained(out)
    assert loaded.head_kind == "token" and loaded.meta["threshold"] == metrics["threshold"]
    write_parquet(samples.assign(reward=1.0), tmp_path / "flat.parquet")
    with pytest.raises(ArtifactError, match="no label to learn"):
        run_fit_classifier(config, tmp_path / "flat.parquet", tmp_path / "flat")


# --- diagnostics ---------------------------------------------------------------------------------


def test_pairwise_accuracy_counts_ordered_pairs_within_prompts():
    prompt_ids = [0, 0, 0, 1, 1]
    rewards = [0.0, 1.0, 3.0, 2.0, 2.0]  # prompt 1's pair is a tie: no order to get right
    values = [0.0, 2.0, 1.0, 5.0, 0.0]  # (0,1) right, (0,2) right, (1,2) wrong
    rng = np.random.default_rng(0)
    assert pairwise_accuracy(prompt_ids, values, rewards, rng) == pytest.approx((2 / 3, 3))
    assert pairwise_accuracy(prompt_ids, values, rewards, rng, min_gap=1.0) == pytest.approx((1 / 2, 2))
    assert pairwise_accuracy(prompt_ids, [1.0] * 5, rewards, rng) == pytest.approx((1 / 2, 3))  # value ties
    assert pairwise_accuracy(prompt_ids, values, rewards, rng, max_pairs=2)[1] == 2
    assert pairwise_accuracy([0, 1], values[:2], rewards[:2], rng) == (None, 0)


def test_value_error_numbers():
    metrics = value_error([1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert metrics["value_mse"] == pytest.approx(2 / 3)
    assert metrics["value_r2"] == pytest.approx(1 - 2 / 8)  # SSE 0+1+1, SST 4+0+4
    assert metrics["value_pearson"] == pytest.approx(np.corrcoef([1, 2, 4], [1, 3, 5])[0, 1])
    assert value_error([0.0, 0.0], [1.0, 2.0])["value_pearson"] is None


def test_cuts_fall_strictly_inside_responses():
    rows, ks = choose_cuts([1, 2, 5, 9], 10, np.random.default_rng(0))
    assert sorted(rows.tolist()) == [1, 2, 3]  # the 1-token response cannot be cut
    lengths = np.array([1, 2, 5, 9])[rows]
    assert ((ks >= 1) & (ks < lengths)).all()


class CountGood:
    """A reward model stand-in: the number of "good" in the text."""

    def score(self, texts):
        return np.array([t.count("good") for t in texts], dtype=np.float64)


def test_rollouts_estimate_the_exact_value_within_the_remaining_budget():
    policy = make_gpt2(len(TOK), seed=3)
    params = SamplingParams(temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=3)
    prefix = TOK.convert_tokens_to_ids(["good"])  # 1 of 3 tokens used: 2 left
    context = TOK.convert_tokens_to_ids(["the", "film"]) + prefix
    good, eos = TOK.convert_tokens_to_ids("good"), TOK.eos_token_id

    def next_probs(ids):
        with torch.no_grad():
            return torch.softmax(policy(torch.tensor([ids])).logits[0, -1].double() / 0.7, -1)

    first = next_probs(context)
    exact = 1 + first[good].item() + sum(first[a].item() * next_probs(context + [a])[good].item()
                                         for a in range(len(TOK)) if a != eos)
    means, noise = rollout_values(policy, TOK, "{prompt}", CountGood(), ["the film"], [prefix], params,
                                  rollouts=3000, batch_size=3000, seed=0)
    assert 0 < noise[0] < 1e-3
    assert abs(means[0] - exact) < 4 * np.sqrt(noise[0])


# --- the stage -----------------------------------------------------------------------------------


def toy_world(tmp_path) -> dict:
    """Folders for a policy (its own vocabulary), a value backbone and a reward model, and a config."""
    policy = make_gpt2(len(OTHER_TOK), seed=1)
    policy.save_pretrained(tmp_path / "policy")
    OTHER_TOK.save_pretrained(tmp_path / "policy")
    make_gpt2(len(TOK), seed=2, n_embd=32).save_pretrained(tmp_path / "backbone")
    TOK.save_pretrained(tmp_path / "backbone")
    torch.manual_seed(4)
    reward = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(TOK), n_embd=16, n_layer=1, n_head=2,
                                                      num_labels=2, pad_token_id=0, bos_token_id=1, eos_token_id=1))
    reward.save_pretrained(tmp_path / "reward")
    TOK.save_pretrained(tmp_path / "reward")
    return {
        "seed": 1, "device": "cpu", "dtype": "auto",
        "models": {"small": {"path": str(tmp_path / "policy"), "template": "{prompt}"}},
        "reward_model": str(tmp_path / "reward"),
        "sample": {"policy": "small", "n": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                   "max_new_tokens": 7, "stop": [], "batch_size": 64},
        "fit_value": {**FIT_CFG, "backbone": str(tmp_path / "backbone"), "head": "token", "epochs": 1, "lora": None,
                      "heldout_fraction": 0.25, "eval": {"cuts": 6, "rollouts": 4, "pairs": 50}},
    }


def test_run_fit_value_writes_a_loadable_model_and_the_diagnostics_stage_scores_it(tmp_path):
    config = toy_world(tmp_path)
    samples = synthetic_samples(16, seed=5, tokenizer=OTHER_TOK)
    write_parquet(samples, tmp_path / "samples.parquet")
    out = tmp_path / "results" / "value"
    metrics = run_fit_value(config, tmp_path / "samples.parquet", out)

    written = json.loads((out / "metrics.json").read_text())
    assert written.keys() == metrics.keys() and written["n_heldout_prompts"] == 4
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    loaded = ValueModel.from_pretrained(out)
    assert loaded.meta["template"] == "{prompt}" and loaded.meta["policy"] == "small"
    assert [p.name for p in out.parent.iterdir()] == ["value"]  # nothing temporary left

    diagnosed = run_diagnose_value(config, tmp_path / "samples.parquet", out, tmp_path / "results" / "diag.json")
    assert diagnosed == json.loads((tmp_path / "results" / "diag.json").read_text())
    assert diagnosed.items() >= written.items()  # the fit's metrics, with the diagnostics added
    assert diagnosed["value_cuts"] == 6 and diagnosed["pairwise_pairs"] > 0
    assert {"value_mse", "value_r2", "value_pearson", "pairwise_accuracy_gap_gt_1"} <= set(diagnosed)


def test_run_fit_value_names_missing_columns_and_empty_samples(tmp_path):
    config = toy_world(tmp_path)
    samples = synthetic_samples(2, seed=0)
    write_parquet(samples.drop(columns=["reward"]), tmp_path / "no_reward.parquet")
    with pytest.raises(ArtifactError, match="reward"):
        run_fit_value(config, tmp_path / "no_reward.parquet", tmp_path / "value")
    write_parquet(samples.iloc[:0], tmp_path / "empty.parquet")
    with pytest.raises(ArtifactError, match="no samples"):
        run_fit_value(config, tmp_path / "empty.parquet", tmp_path / "value")
    assert not (tmp_path / "value").exists()
