"""Implicit value function: preference pairs, the implicit reward, and a DPO run on a toy problem."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.toy_models import make_gpt2, make_tokenizer
from valueguide.artifacts import ArtifactError, write_parquet
from valueguide.implicit import (
    build_pairs,
    encode_prompts,
    encode_responses,
    implicit_rewards,
    pairwise_accuracy,
    run_fit_implicit,
    split_prompts,
    train_and_heldout_pairs,
    tuned_spec,
)


def _samples(groups: list[list[tuple[list[int], float]]]) -> pd.DataFrame:
    """One prompt per group; each response is (token ids, reward)."""
    rows = [dict(prompt_id=pid, prompt=f"p{pid}", sample_idx=k, response=" ".join(map(str, ids)),
                 response_ids=ids, finished=True, reward=reward, logprobs=[0.0] * len(ids))
            for pid, group in enumerate(groups) for k, (ids, reward) in enumerate(group)]
    return pd.DataFrame(rows)


# --- pairs -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gap", [-2.0, 0.0, 0.6, 2.5])
def test_bradley_terry_preference_frequency_is_sigmoid_of_reward_gap(gap):
    n = 1500
    samples = _samples([[([3, 4], gap), ([5], 0.0)]] * n)
    pairs = build_pairs(samples, per_prompt=1, selection="bradley_terry", rng=np.random.default_rng(0))
    assert len(pairs) == n
    first_wins = np.mean([ids == [3, 4] for ids in pairs["chosen_ids"]])
    p = expit(gap)
    assert abs(first_wins - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9


def test_by_reward_prefers_higher_reward_and_skips_ties():
    samples = _samples([
        [([1], 1.0), ([2], 3.0), ([3], 3.0), ([4], 0.0)],  # 6 pairs, one tied
        [([1], 2.0), ([2], 2.0)],  # only a tie: no pair
    ])
    pairs = build_pairs(samples, per_prompt=10, selection="by_reward", rng=np.random.default_rng(0))
    assert len(pairs) == 5
    assert (pairs["chosen_reward"] > pairs["rejected_reward"]).all()
    assert set(pairs["prompt_id"]) == {0}


def test_pairs_use_distinct_responses_at_most_per_prompt_times():
    samples = _samples([
        [([7, 8], 1.0), ([7, 8], 1.0), ([9], 0.0)],  # two copies of one response: a single distinct pair
        [([1], 0.0), ([2], 1.0), ([3], 2.0), ([4], 3.0)],
    ])
    pairs = build_pairs(samples, per_prompt=2, selection="bradley_terry", rng=np.random.default_rng(1))
    assert pairs.groupby("prompt_id").size().to_dict() == {0: 1, 1: 2}
    assert all(c != r for c, r in zip(pairs["chosen_ids"], pairs["rejected_ids"]))
    keys = [frozenset(map(tuple, pair)) for pair in zip(pairs["chosen_ids"], pairs["rejected_ids"])]
    assert len(set(keys)) == len(keys)


def test_heldout_split_is_disjoint_by_prompt():
    train_ids, heldout_ids = split_prompts(np.repeat(np.arange(50), 4), 0.2, np.random.default_rng(0))
    assert len(heldout_ids) == 10 and len(train_ids) == 40
    assert set(train_ids) | set(heldout_ids) == set(range(50)) and not set(train_ids) & set(heldout_ids)

    samples = _samples([[([1], 0.0), ([2], 1.0), ([3], 2.0)]] * 30)
    train, heldout = train_and_heldout_pairs(samples, 2, "bradley_terry", 0.3, np.random.default_rng(0))
    assert heldout["prompt_id"].nunique() == 9 and train["prompt_id"].nunique() == 21
    assert not set(train["prompt_id"]) & set(heldout["prompt_id"])


def test_unusable_samples_fail_with_a_clear_error():
    with pytest.raises(ArtifactError, match="empty"):
        train_and_heldout_pairs(_samples([]), 2, "bradley_terry", 0.1, np.random.default_rng(0))
    identical = _samples([[([1, 2], 0.5), ([1, 2], 0.5)]] * 5)
    with pytest.raises(ArtifactError, match="two distinct responses"):
        train_and_heldout_pairs(identical, 2, "bradley_terry", 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="selection"):
        build_pairs(identical, 2, "by_length", np.random.default_rng(0))


# --- scoring -----------------------------------------------------------------------------------------------------

def _hand_logprob(model, prompt: list[int], response: list[int]) -> float:
    logp = torch.log_softmax(model(torch.tensor([prompt + response])).logits[0].double(), -1)
    return sum(logp[len(prompt) + t - 1, tok].item() for t, tok in enumerate(response))


def test_implicit_reward_is_beta_times_summed_log_ratio_with_own_templates():
    tok = make_tokenizer()
    tuned, untuned = make_gpt2(len(tok), seed=1), make_gpt2(len(tok), seed=2)
    prompts = ["the film", "a b c d", "good"]
    tuned_prompts = encode_prompts(tok, "the film {prompt}", prompts)
    untuned_prompts = encode_prompts(tok, "{prompt}", prompts)
    assert tuned_prompts[0] != untuned_prompts[0]
    responses = [[10, 11, 1], [2], [3, 4, 5, 6, 7]]  # ragged, to exercise padding inside a batch
    beta = 0.3
    got = implicit_rewards(tuned, untuned, responses, tuned_prompts, untuned_prompts, beta, batch_size=2)
    with torch.no_grad():
        want = [beta * (_hand_logprob(tuned, tp, r) - _hand_logprob(untuned, up, r))
                for tp, up, r in zip(tuned_prompts, untuned_prompts, responses)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got).min() > 1e-3  # two different random models: the ratios are not trivially zero


def test_pairwise_accuracy_counts_score_ties_half_and_skips_reward_ties():
    acc = pairwise_accuracy([1.0, 2.0, 0.0, 5.0], [0.0, 3.0, 0.0, 1.0], [1.0, 1.0, 2.0, 4.0], [0.0, 0.0, 1.0, 4.0])
    assert acc == pytest.approx((1 + 0 + 0.5) / 3)


def test_responses_retokenised_for_another_vocabulary_keep_the_eos():
    tok = make_tokenizer()
    ids = encode_responses(tok, ["good film", "bad"], [True, False])
    assert ids == [[tok.convert_tokens_to_ids("good"), tok.convert_tokens_to_ids("film"), tok.eos_token_id],
                   [tok.convert_tokens_to_ids("bad")]]


# --- the stage ---------------------------------------------------------------------------------------------------

WORDS = ["good", "bad", "a", "b", "c"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A random tiny gpt2 and random responses whose reward is the number of "good" tokens."""
    root = tmp_path_factory.mktemp("implicit")
    tok = make_tokenizer()
    for name, seed in [("untuned", 0), ("other", 5)]:
        make_gpt2(len(tok), seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(120):
        words = [list(rng.choice(WORDS, size=4)) for _ in range(4)]
        groups.append([(tok.convert_tokens_to_ids(w) + [tok.eos_token_id], float(w.count("good"))) for w in words])
    samples = _samples(groups)
    samples["prompt"] = ["the film " + "abcdefgh"[pid % 8] for pid in samples["prompt_id"]]
    samples["response"] = [tok.decode(ids, skip_special_tokens=True) for ids in samples["response_ids"]]
    write_parquet(samples, root / "samples.parquet")
    return root, tok


def _config(root, **fit) -> dict:
    return {
        "seed": 1, "device": "cpu", "dtype": "auto",
        "models": {"toy": {"path": str(root / "untuned"), "template": "{prompt}"}},
        "sample": {"policy": "toy"},
        "fit_implicit": {"mode": "train", "untuned": "toy", "tuned": None,
                         "pairs": {"selection": "bradley_terry", "per_prompt": 2}, "beta": 0.1, "lr": 2e-2,
                         "epochs": 2, "batch_size": 16, "lora": None, "heldout_fraction": 0.2, **fit},
    }


def test_dpo_makes_the_implicit_reward_rank_heldout_pairs(toy, tmp_path):
    root, tok = toy
    out = tmp_path / "tuned"
    metrics = run_fit_implicit(_config(root), root / "samples.parquet", out)

    assert metrics["n_heldout_pairs"] == 48 and metrics["n_train_pairs"] == 192
    assert metrics["heldout_accuracy"] >= 0.8
    assert metrics["heldout_accuracy_untuned"] == 0.5
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    assert tuned_spec(out) == str(out) and list(out.glob("*.safetensors"))

    tuned = AutoModelForCausalLM.from_pretrained(out).eval()
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tok.get_vocab()
    untuned = AutoModelForCausalLM.from_pretrained(root / "untuned").eval()
    prompt = encode_prompts(tok, "{prompt}", ["the film h"])
    good, bad = tok.convert_tokens_to_ids(["good"] * 4) + [1], tok.convert_tokens_to_ids(["bad"] * 4) + [1]
    rewards = implicit_rewards(tuned, untuned, [good, bad], prompt * 2, prompt * 2, beta=0.1)
    assert rewards[0] - rewards[1] > 0.1


def test_lora_adapter_is_merged_into_a_plain_model(toy, tmp_path):
    root, _ = toy
    out = tmp_path / "tuned"
    metrics = run_fit_implicit(_config(root, lora={"r": 4, "alpha": 8}), root / "samples.parquet", out)
    assert not (out / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    untuned = AutoModelForCausalLM.from_pretrained(root / "untuned").state_dict()
    changed = {name for name in untuned if not torch.equal(tuned[name], untuned[name])}
    assert changed and all(".attn.c_attn." in name for name in changed)  # peft's gpt2 default target
    assert metrics["heldout_accuracy"] >= 0.7


def test_pretrained_mode_points_to_the_named_pair_and_trains_nothing(toy, tmp_path):
    root, tok = toy
    out = tmp_path / "pair"
    metrics = run_fit_implicit(_config(root, mode="pretrained", tuned=str(root / "other")), root / "samples.parquet",
                               out)
    assert tuned_spec(out) == str(root / "other")
    assert not list(out.glob("*.safetensors"))
    assert "train_time_s" not in metrics and 0.0 <= metrics["heldout_accuracy"] <= 1.0


def test_samples_in_another_vocabulary_are_retokenised(toy, tmp_path):
    root, tok = toy
    policy_tok = make_tokenizer(WORDS[::-1] + ["the", "film", "h"])  # same words, other ids
    make_gpt2(len(policy_tok)).save_pretrained(tmp_path / "policy")
    policy_tok.save_pretrained(tmp_path / "policy")
    samples = pd.read_parquet(root / "samples.parquet")
    eos = policy_tok.eos_token_id
    samples["response_ids"] = [policy_tok(text)["input_ids"] + [eos] for text in samples["response"]]
    write_parquet(samples, tmp_path / "policy_samples.parquet")
    assert samples["response_ids"][0] != pd.read_parquet(root / "samples.parquet")["response_ids"][0].tolist()

    config = _config(root, mode="pretrained", tuned=str(root / "other"))
    direct = run_fit_implicit(config, root / "samples.parquet", tmp_path / "direct")
    config["models"]["policy"] = {"path": str(tmp_path / "policy"), "template": "{prompt}"}
    config["sample"]["policy"] = "policy"
    retokenised = run_fit_implicit(config, tmp_path / "policy_samples.parquet", tmp_path / "retokenised")
    assert retokenised == direct


def test_pretrained_mode_refuses_a_pair_without_a_shared_vocabulary(toy, tmp_path):
    root, _ = toy
    foreign = make_tokenizer(["x", "y", "z"])
    make_gpt2(len(foreign)).save_pretrained(tmp_path / "foreign")
    foreign.save_pretrained(tmp_path / "foreign")
    config = _config(root, mode="pretrained", tuned=str(tmp_path / "foreign"))
    with pytest.raises(ValueError, match="vocabulary"):
        run_fit_implicit(config, root / "samples.parquet", tmp_path / "pair")
    assert not (tmp_path / "pair").exists()
