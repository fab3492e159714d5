"""Held-out diagnostics of a fitted value model (docs/ALGORITHMS.md §2.5).

- value error: cut held-out responses at random positions, roll out completions from the base
  policy π_b from each cut and take the mean reward as the truth ``V^{π_b}(s)``; report MSE,
  Pearson correlation and R² of the model's value of the cut prefix against it;
- pairwise accuracy: how often the terminal values of two responses to one prompt are ordered like
  their rewards (over all pairs, and over pairs whose reward gap exceeds 1).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import torch

from ..models import LoadOptions, load_causal_lm
from ..reward import RewardModel
from ..sampling import SamplingParams, cut_response, sample_ids
from ..seeding import derive_seed
from ..texts import decode
from .model import ValueModel, encode_prompt, left_pad, predict_last, readable_examples, value_examples

log = logging.getLogger(__name__)


def pairwise_accuracy(prompt_ids, values, rewards, rng: np.random.Generator, min_gap: float = 0.0,
                      max_pairs: int | None = None) -> tuple[float | None, int]:
    """Share of response pairs (same prompt, reward gap > ``min_gap``, rewards not tied) whose values
    are ordered like their rewards; a tie in value counts one half. ``None`` when there is no pair."""
    values, rewards = np.asarray(values, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    groups = pd.Series(np.arange(len(values))).groupby(np.asarray(prompt_ids)).agg(list)
    pairs = np.array([(i, j) for rows in groups for i, j in itertools.combinations(rows, 2)
                      if abs(rewards[i] - rewards[j]) > min_gap]).reshape(-1, 2)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[rng.choice(len(pairs), size=max_pairs, replace=False)]
    if len(pairs) == 0:
        return None, 0
    agree = np.sign(values[pairs[:, 0]] - values[pairs[:, 1]]) * np.sign(rewards[pairs[:, 0]] - rewards[pairs[:, 1]])
    return float(np.mean((agree + 1) / 2)), len(pairs)


def value_error(predicted, truth) -> dict:
    """MSE, Pearson correlation and R² (1 − SSE/SST, no refit) of predictions against the truth."""
    predicted, truth = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    sse = float(np.sum((predicted - truth) ** 2))
    sst = float(np.sum((truth - truth.mean()) ** 2))
    defined = predicted.std() > 0 and truth.std() > 0
    return {"value_mse": sse / len(truth),
            "value_pearson": float(np.corrcoef(predicted, truth)[0, 1]) if defined else None,
            "value_r2": 1 - sse / sst if sst > 0 else None}


def choose_cuts(lengths, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (row, k) cuts that keep the first k tokens, 1 ≤ k < length: strictly inside the
    response, so the truth needs rollouts. Rows are drawn without replacement."""
    lengths = np.asarray(lengths)
    eligible = np.flatnonzero(lengths >= 2)
    rows = rng.choice(eligible, size=min(n, len(eligible)), replace=False)
    return rows, rng.integers(1, lengths[rows])


@torch.no_grad()
def rollout_values(policy, tokenizer, template: str, reward_model: RewardModel, prompts: list[str],
                   prefixes: list[list[int]], params: SamplingParams, rollouts: int, batch_size: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo ``V^{π_b}`` of each (prompt, response prefix): the mean reward of ``rollouts``
    completions sampled like the sample stage, within what is left of ``max_new_tokens``.
    Returns the means and the variance of each mean (the truth's own noise)."""
    per_call = max(1, batch_size // rollouts)
    texts = []
    for call, start in enumerate(range(0, len(prompts), per_call)):
        chunk = range(start, min(start + per_call, len(prompts)))
        input_ids, attention_mask = left_pad(
            [encode_prompt(tokenizer, template, prompts[i]) + prefixes[i] for i in chunk], tokenizer.pad_token_id)
        out, _ = sample_ids(policy, input_ids.repeat_interleave(rollouts, 0),
                            attention_mask.repeat_interleave(rollouts, 0), params,
                            max(1, params.max_new_tokens - min(len(prefixes[i]) for i in chunk)), tokenizer.eos_token_id,
                            torch.Generator().manual_seed(derive_seed(seed, "rollouts", call)))
        for row, new_ids in zip(np.repeat(list(chunk), rollouts), out):
            budget = params.max_new_tokens - len(prefixes[row])
            # A shorter budget's sample is the first tokens of a longer one: truncation is exact.
            new_ids = new_ids[:max(budget, 0)].tolist()
            completion = cut_response(new_ids, [0.0] * len(new_ids), tokenizer, tokenizer.eos_token_id, params.stop)
            texts.append(prompts[row] + decode(tokenizer, prefixes[row] + completion.ids))
    scores = reward_model.score(texts).reshape(len(prompts), rollouts)
    return scores.mean(1), scores.var(1, ddof=1) / rollouts if rollouts > 1 else np.zeros(len(prompts))


def evaluate_value(value_model: ValueModel, tokenizer, heldout: pd.DataFrame, config: dict, world_dir,
                   policy_tokenizer, options: LoadOptions) -> dict:
    """All held-out diagnostics for metrics.json; loads the base policy and the reward model."""
    cfg, eval_cfg, sample_cfg = config["fit_value"], config["fit_value"]["eval"], config["sample"]
    seed = config["seed"]
    response_ids = [[int(i) for i in ids] for ids in heldout.response_ids]
    rewards = heldout.reward.to_numpy(dtype=np.float64)
    examples = value_examples(heldout.prompt, response_ids, rewards, tokenizer, cfg["template"], policy_tokenizer)
    terminal = predict_last(value_model, examples, tokenizer.pad_token_id, cfg["batch_size"])
    metrics = {}
    for name, gap in (("", 0.0), ("_gap_gt_1", 1.0)):
        rng = np.random.default_rng(derive_seed(seed, "pairs", name))
        acc, n = pairwise_accuracy(heldout.prompt_id, terminal, rewards, rng, min_gap=gap, max_pairs=eval_cfg["pairs"])
        metrics[f"pairwise_accuracy{name}"], metrics[f"pairwise_pairs{name}"] = acc, n

    rows, ks = choose_cuts([len(ids) for ids in response_ids], eval_cfg["cuts"],
                           np.random.default_rng(derive_seed(seed, "cuts")))
    if len(rows) == 0:
        log.warning("no held-out response is long enough to cut; skipping the value error")
        return metrics
    prompts = [heldout.prompt.iloc[r] for r in rows]
    prefixes = [response_ids[r][:k] for r, k in zip(rows, ks)]
    # Across vocabularies a prefix may read as no token of the value model's (a lone space, half a
    # character): it has no value to check, so that cut is left out.
    kept, cut_examples = readable_examples(prompts, prefixes, tokenizer, cfg["template"], policy_tokenizer)
    if len(kept) < len(rows):
        log.info("%d of %d cuts read as no token of the value model's; left out", len(rows) - len(kept), len(rows))
    if not kept:
        log.warning("no cut of a held-out response reads as a value-model token; skipping the value error")
        return metrics
    prompts, prefixes = [prompts[i] for i in kept], [prefixes[i] for i in kept]
    predicted = predict_last(value_model, cut_examples, tokenizer.pad_token_id, cfg["batch_size"])

    policy_spec = config["models"][sample_cfg["policy"]]
    policy = load_causal_lm(policy_spec["path"], world_dir, options)
    reward_model = RewardModel.load(config["reward_model"], world_dir, options)
    truth, noise = rollout_values(policy, policy_tokenizer, policy_spec["template"], reward_model, prompts, prefixes,
                                  SamplingParams.from_config(sample_cfg), eval_cfg["rollouts"],
                                  sample_cfg["batch_size"], derive_seed(seed, "fit_value", "rollouts"))
    metrics.update(value_error(predicted, truth))
    metrics.update({"value_cuts": len(kept), "value_rollouts": eval_cfg["rollouts"],
                    "value_truth_noise_var": float(noise.mean()), "value_truth_var": float(truth.var())})
    return metrics
