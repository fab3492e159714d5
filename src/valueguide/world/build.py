"""Build the tiny world step by step; each step is one cached pipeline job.

Steps: ``corpus`` (texts, labels and the tokenizer), ``lm`` (one causal LM per name), ``reward``
(the gold classifier) and ``summary`` (what the world looks like, base-policy reward spread
included). Training runs on a fixed number of threads so that the bytes written do not depend on
the machine's core count.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import atomic_dir, read_json, read_parquet, write_json, write_parquet
from ..seeding import derive_seed
from . import lm as lm_mod
from .corpus import INSTRUCTION_TEMPLATES, GENRES, make_reviews
from .tokenizer import save_tokenizer, train_tokenizer

INSTRUCTION_SHARE = 0.15
HELDOUT_SHARE = 0.1


def _corpus_texts(cfg_world: dict, seed: int) -> pd.DataFrame:
    reviews = make_reviews(cfg_world["n_reviews"], derive_seed(seed, "world", "corpus"))
    rng = np.random.default_rng(derive_seed(seed, "world", "instructions"))
    rows = []
    for review in reviews:
        text = review.text
        if rng.random() < INSTRUCTION_SHARE:  # some reviews answer an instruction, for the instruction task
            template = INSTRUCTION_TEMPLATES[int(rng.integers(len(INSTRUCTION_TEMPLATES)))][0]
            instruction = template.format(label_word="positive" if review.label else "negative",
                                          genre=GENRES[int(rng.integers(len(GENRES)))], aspect="story")
            text = f"{instruction} {text}"
        rows.append({"text": text, "label": review.label})
    df = pd.DataFrame(rows)
    df["heldout"] = np.arange(len(df)) >= int(len(df) * (1 - HELDOUT_SHARE))
    return df


def build_corpus(config: dict, world_dir: Path) -> None:
    world_dir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus_texts(config["world"], config["seed"])
    tokenizer = train_tokenizer(corpus.loc[~corpus.heldout, "text"].tolist(), config["world"]["vocab_size"])
    with atomic_dir(world_dir / "tokenizer") as tmp:
        save_tokenizer(tokenizer, tmp)
    write_parquet(corpus, world_dir / "corpus.parquet")


def _load_world_tokenizer(world_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(world_dir / "tokenizer")


def _encoded(world_dir: Path, tokenizer, with_eos: bool):
    corpus = read_parquet(world_dir / "corpus.parquet", required=["text", "label", "heldout"])
    ids = tokenizer(corpus["text"].tolist())["input_ids"]
    if with_eos:
        ids = [row + [tokenizer.eos_token_id] for row in ids]
    train = [i for i, h in zip(ids, corpus.heldout) if not h]
    held = [i for i, h in zip(ids, corpus.heldout) if h]
    labels = corpus["label"].tolist()
    return train, held, [l for l, h in zip(labels, corpus.heldout) if not h], [l for l, h in zip(labels, corpus.heldout) if h]


def build_lm(config: dict, world_dir: Path, name: str, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    spec = config["world"]["models"].get(name)
    if spec is None:
        raise KeyError(f"world.models has no model {name!r}; it has {sorted(config['world']['models'])}")
    tokenizer = _load_world_tokenizer(world_dir)
    train_ids, held_ids, _, _ = _encoded(world_dir, tokenizer, with_eos=True)
    seed = derive_seed(config["seed"], "world", "lm", name)
    torch.manual_seed(seed)
    model = lm_mod.make_lm(spec, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    start = time.perf_counter()
    blocks = lm_mod.pack(train_ids, config["world"]["pretrain"]["block_size"])
    losses = lm_mod.train(model, lm_mod.lm_loss(blocks), blocks, config["world"]["pretrain"], seed,
                          desc=f"pretrain {name}")
    stats = {
        "name": name, "spec": spec, "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss_last50": float(np.mean(losses[-50:])),
        "heldout_loss": lm_mod.mean_lm_loss(model, held_ids, tokenizer.pad_token_id),
        "train_seconds": time.perf_counter() - start,
    }
    with atomic_dir(world_dir / "models" / name) as tmp:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(stats, tmp / "world_stats.json")


def build_reward(config: dict, world_dir: Path, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    cfg = config["world"]["reward"]
    tokenizer = _load_world_tokenizer(world_dir)
    train_ids, held_ids, train_labels, held_labels = _encoded(world_dir, tokenizer, with_eos=False)
    seed = derive_seed(config["seed"], "world", "reward")
    torch.manual_seed(seed)
    model = lm_mod.make_classifier(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    start = time.perf_counter()
    lm_mod.train(model, lm_mod.classifier_loss(train_ids, train_labels, tokenizer.pad_token_id), train_ids,
                 cfg, seed, desc="train gold reward")
    stats = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_accuracy": lm_mod.classifier_accuracy(model, held_ids, held_labels, tokenizer.pad_token_id),
        "train_seconds": time.perf_counter() - start,
    }
    with atomic_dir(world_dir / "models" / "reward") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(stats, tmp / "world_stats.json")


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
