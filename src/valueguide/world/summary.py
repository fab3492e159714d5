"""The world's summary: every world model's stats and the reward spread of the base policy's samples.

Apart from ``build`` so that its job imports no torch (a summary of JSON files took 7 to 10 s of imports).
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_json, read_parquet, write_json


def summarize(config: dict, world_dir: Path, samples_path: Path, out_path: Path) -> dict:
    """Collect every world model's stats and the reward spread of base-policy samples."""
    samples = read_parquet(samples_path, required=["reward"])
    rewards = samples["reward"].to_numpy()
    summary = {
        "models": {name: read_json(world_dir / "models" / name / "world_stats.json")
                   for name in config["world"]["models"]},
        "reward_model": read_json(world_dir / "models" / "reward" / "world_stats.json"),
        "base_policy_rewards": {
            "policy": config["sample"]["policy"], "n": int(len(rewards)),
            "mean": float(rewards.mean()), "std": float(rewards.std()),
            "min": float(rewards.min()), "max": float(rewards.max()),
            "share_positive": float((rewards > 0).mean()),
        },
    }
    write_json(summary, out_path)
    return summary
