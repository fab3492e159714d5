"""How far the best guided method got toward the task's ceiling, per guided model.

The ceiling is the best gold reward among the base policy's samples (stage sample): a reward the
base policy can reach by chance, so one the methods could in principle reach by search. A task
saturates when the best method lands close to it; then the methods can differ only by little, and
the paper's comparisons cannot be resolved. ``share`` is the best method's mean reward, as a share
of the way from ``base`` to the ceiling.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import read_parquet

SATURATED = 0.7  # a share above this leaves the methods too little room to differ


def headroom(reward: pd.DataFrame, samples_path: str | Path) -> pd.DataFrame:
    """One row per guided model that has a ``base`` row: base, best method, ceiling and share."""
    rewards = read_parquet(samples_path, required=["reward"])["reward"]
    ceiling = float(rewards.max())
    rows = []
    for model in dict.fromkeys(reward["model"]):
        sub = reward[reward["model"] == model].set_index("method")["reward_mean"]
        guided = sub.drop("base", errors="ignore")
        if "base" not in sub or guided.empty:
            continue
        best = guided.idxmax()
        share = (guided[best] - sub["base"]) / (ceiling - sub["base"]) if ceiling > sub["base"] else float("nan")
        rows.append({"model": model, "base": float(sub["base"]), "best_method": best, "best": float(guided[best]),
                     "ceiling": ceiling, "samples": int(len(rewards)), "share": float(share)})
    return pd.DataFrame(rows, columns=["model", "base", "best_method", "best", "ceiling", "samples", "share"])
