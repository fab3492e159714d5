"""Preference pairs from base-policy samples, as DPO sees them.

A pair is two distinct responses to one prompt. The preferred one is drawn by Bradley–Terry,
P(a ≻ b) = σ(r_a − r_b), which is the preference model DPO assumes, so the tuned model's implicit
reward estimates r (up to a per-prompt constant); ``by_reward`` takes the higher reward instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from ..artifacts import ArtifactError

SELECTIONS = ("bradley_terry", "by_reward")
PAIR_COLUMNS = ["prompt_id", "prompt", "chosen", "rejected", "chosen_ids", "rejected_ids",
                "chosen_reward", "rejected_reward"]


def split_prompts(prompt_ids, heldout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out prompt ids: held-out pairs never share a prompt with training pairs."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1); got {heldout_fraction}")
    ids = rng.permutation(np.unique(np.asarray(prompt_ids)))
    n_heldout = int(round(heldout_fraction * len(ids)))
    if heldout_fraction > 0 and len(ids) > 1:
        n_heldout = min(max(n_heldout, 1), len(ids) - 1)
    return np.sort(ids[n_heldout:]), np.sort(ids[:n_heldout])


def _distinct(group: pd.DataFrame) -> pd.DataFrame:
    keys = group["response_ids"].map(lambda ids: tuple(int(i) for i in ids))
    return group.loc[~keys.duplicated()]


def build_pairs(samples: pd.DataFrame, per_prompt: int, selection: str, rng: np.random.Generator) -> pd.DataFrame:
    """Up to ``per_prompt`` pairs of distinct responses per prompt, each pair of responses used once.

    With ``by_reward`` only pairs whose rewards differ are candidates (a tie carries no preference).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"pairs.selection must be one of {SELECTIONS}; got {selection!r}")
    if per_prompt < 1:
        raise ValueError(f"pairs.per_prompt must be at least 1; got {per_prompt}")
    rows = []
    for prompt_id, group in samples.groupby("prompt_id", sort=True):
        group = _distinct(group)
        rewards = group["reward"].to_numpy(dtype=np.float64)
        candidates = [(i, j) for i in range(len(group)) for j in range(i + 1, len(group))
                      if selection == "bradley_terry" or rewards[i] != rewards[j]]
        if not candidates:
            continue
        picks = rng.choice(len(candidates), size=min(per_prompt, len(candidates)), replace=False)
        for pick in picks:
            a, b = candidates[pick]
            if selection == "bradley_terry":
                a_wins = rng.random() < expit(rewards[a] - rewards[b])
            else:
                a_wins = rewards[a] > rewards[b]
            win, lose = (group.iloc[a], group.iloc[b]) if a_wins else (group.iloc[b], group.iloc[a])
            rows.append((prompt_id, win["prompt"], win["response"], lose["response"],
                         [int(i) for i in win["response_ids"]], [int(i) for i in lose["response_ids"]],
                         float(win["reward"]), float(lose["reward"])))
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def train_and_heldout_pairs(samples: pd.DataFrame, per_prompt: int, selection: str, heldout_fraction: float,
                            rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the samples by prompt, then pair each side; errors say which input is unusable."""
    if samples.empty:
        raise ArtifactError("the samples are empty: there is nothing to build preference pairs from")
    train_ids, heldout_ids = split_prompts(samples["prompt_id"], heldout_fraction, rng)
    train = build_pairs(samples[samples["prompt_id"].isin(train_ids)], per_prompt, selection, rng)
    heldout = build_pairs(samples[samples["prompt_id"].isin(heldout_ids)], per_prompt, selection, rng)
    if train.empty:
        raise ArtifactError(
            "no training prompt has two distinct responses"
            + (" with different rewards" if selection == "by_reward" else "")
            + f" ({samples['prompt_id'].nunique()} prompts, {len(samples)} samples): sample more responses per prompt"
        )
    return train, heldout
