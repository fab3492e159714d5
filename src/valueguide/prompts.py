"""Stage prompts: the prompt splits of a task, as ``prompts/{split}.parquet``: from the tiny world, or a hub dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import write_parquet
from .hub import load_prompt_split
from .seeding import derive_seed
from .world.corpus import make_instructions, make_reviews

SPLITS = ("train", "test", "alpaca")


def world_review_prompts(n: int, seed: int) -> pd.DataFrame:
    """Review openings, sometimes with the first word of the body: sentiment is left open."""
    rng = np.random.default_rng(seed)
    prompts = []
    for review in make_reviews(n, seed):
        first_words = review.body.split()[: int(rng.integers(2))]
        prompts.append(" ".join([review.opening, *first_words]))
    return pd.DataFrame({"prompt_id": np.arange(n), "prompt": prompts})


def world_instruction_prompts(n: int, seed: int) -> pd.DataFrame:
    pairs = make_instructions(n, seed)
    return pd.DataFrame({"prompt_id": np.arange(n), "prompt": [p for p, _ in pairs],
                         "reference": [r for _, r in pairs]})


def make_prompts(config: dict, split: str) -> pd.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    cfg = config["prompts"]
    n = cfg.get(f"n_{split}", 0)
    if cfg["source"] == "hub":
        if split not in cfg.get("hub", {}):
            raise ValueError(f"prompts.hub has no dataset for split {split!r}")
        return load_prompt_split(cfg["hub"][split], n)
    seed = derive_seed(config["seed"], "prompts", config["task"], split)
    if split == "alpaca" or config["task"] == "instruction":
        return world_instruction_prompts(n, seed)
    if config["task"] == "sentiment":
        return world_review_prompts(n, seed)
    raise ValueError(f"the tiny world has no prompts for task {config['task']!r}")


def run_prompts(config: dict, split: str, out_path: str | Path) -> pd.DataFrame:
    """Write one split; ``alpaca`` is the instruction set judged AlpacaEval-style against references."""
    df = make_prompts(config, split)
    if df.empty:
        raise ValueError(f"prompts.n_{split} is 0: a split needs at least one prompt")
    write_parquet(df, out_path)
    return df
