"""Build the tiny world step by step; each step is one cached pipeline job.

Steps: ``corpus`` (texts, scores and labels), ``lm`` (one causal LM per name), ``reward`` (the gold
reward, a regressor of the score) and ``summary`` (what the world looks like, base-policy reward spread included). Every
model speaks one of the paper's real vocabularies (``vocabularies``: GPT-2, Llama-2, Mistral), with
embeddings sized to it and tied to the output layer, trained in the compact form of ``pooled``.
A model with a chat template (Tulu's, Mistral's) reads the corpus's instruction examples in that
format. Training runs on a fixed number of threads so that the bytes written do not depend on the
machine's core count.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import vocabularies
from ..artifacts import atomic_dir, read_parquet, write_json, write_parquet
from ..seeding import derive_seed
from ..templates import render_for
from . import lm as lm_mod
from .corpus import INSTRUCTION_TEMPLATES, GENRES, make_reviews
from .pooled import Pooling, compact_model, expand

INSTRUCTION_SHARE = 0.15
HELDOUT_SHARE = 0.1


def _corpus_texts(cfg_world: dict, seed: int) -> pd.DataFrame:
    reviews = make_reviews(cfg_world["n_reviews"], derive_seed(seed, "world", "corpus"))
    rng = np.random.default_rng(derive_seed(seed, "world", "instructions"))
    rows = []
    for review in reviews:
        instruction = ""
        if rng.random() < INSTRUCTION_SHARE:  # some reviews answer an instruction, for the instruction task
            template = INSTRUCTION_TEMPLATES[int(rng.integers(len(INSTRUCTION_TEMPLATES)))][0]
            instruction = template.format(label_word="positive" if review.label else "negative",
                                          genre=GENRES[int(rng.integers(len(GENRES)))], aspect="story")
        rows.append({"instruction": instruction, "response": review.text, "label": review.label,
                     "score": review.score,
                     "text": f"{instruction} {review.text}" if instruction else review.text})
    df = pd.DataFrame(rows)
    df["heldout"] = np.arange(len(df)) >= int(len(df) * (1 - HELDOUT_SHARE))
    return df


def build_corpus(config: dict, world_dir: Path) -> None:
    world_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(_corpus_texts(config["world"], config["seed"]), world_dir / "corpus.parquet")


def _corpus(world_dir: Path) -> pd.DataFrame:
    return read_parquet(world_dir / "corpus.parquet", required=["text", "instruction", "response", "label", "score", "heldout"])


def _encoded(corpus: pd.DataFrame, tokenizer, with_eos: bool, chat: bool) -> list[list[int]]:
    """Token ids of every corpus text; with ``chat``, an instruction example in the chat format."""
    texts = [render_for(tokenizer, "chat", i) + r if chat and i else t
             for t, i, r in zip(corpus.text, corpus.instruction, corpus.response)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [row + [tokenizer.eos_token_id] for row in ids] if with_eos else ids


def _split(values: list, corpus: pd.DataFrame) -> tuple[list, list]:
    held = corpus.heldout.tolist()
    return [v for v, h in zip(values, held) if not h], [v for v, h in zip(values, held) if h]


def build_lm(config: dict, world_dir: Path, name: str, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    spec = config["world"]["models"].get(name)
    if spec is None:
        raise KeyError(f"world.models has no model {name!r}; it has {sorted(config['world']['models'])}")
    tokenizer = vocabularies.load(spec["vocab"])
    corpus = _corpus(world_dir)
    ids = _encoded(corpus, tokenizer, with_eos=True, chat=tokenizer.chat_template is not None)
    eos = tokenizer.eos_token_id
    pooling = Pooling.of(ids, len(tokenizer), always=[eos, tokenizer.bos_token_id])
    train_ids, held_ids = _split(pooling.to_compact(ids), corpus)
    seed = derive_seed(config["seed"], "world", "lm", name)
    torch.manual_seed(seed)
    index, bos = pooling.index(), tokenizer.bos_token_id
    model = compact_model(lambda vocab: lm_mod.make_lm(spec, vocab, index[eos], index[eos], index.get(bos)), pooling)
    pad = index[eos]
    start = time.perf_counter()
    blocks = lm_mod.pack(train_ids, config["world"]["pretrain"]["block_size"])
    losses = lm_mod.train(model, lm_mod.lm_loss(blocks), blocks, config["world"]["pretrain"], seed,
                          desc=f"pretrain {name}")
    stats = {
        "name": name, "spec": spec, "vocabulary": len(tokenizer), "tokens_used": len(pooling.used),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss_last50": float(np.mean(losses[-50:])),
        "heldout_loss": lm_mod.mean_lm_loss(model, held_ids, pad),
        "train_seconds": time.perf_counter() - start,
    }
    full = expand(model, lambda vocab: lm_mod.make_lm(spec, vocab, eos, eos, bos), pooling).eval()
    with atomic_dir(world_dir / "models" / name) as tmp:
        full.generation_config.pad_token_id = eos
        full.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        pooling.save(tmp)
        write_json(stats, tmp / "world_stats.json")


def build_reward(config: dict, world_dir: Path, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    cfg = config["world"]["reward"]
    tokenizer = vocabularies.load(cfg["vocab"])
    corpus = _corpus(world_dir)
    ids = _encoded(corpus, tokenizer, with_eos=False, chat=False)
    eos = tokenizer.eos_token_id
    pooling = Pooling.of(ids, len(tokenizer), always=[eos])
    (train_ids, held_ids), (train_scores, held_scores) = _split(pooling.to_compact(ids), corpus), \
        _split(corpus.score.tolist(), corpus)
    seed = derive_seed(config["seed"], "world", "reward")
    torch.manual_seed(seed)
    pad = pooling.index()[eos]
    model = compact_model(lambda vocab: lm_mod.make_reward_model(cfg, vocab, pad, pad), pooling)
    start = time.perf_counter()
    lm_mod.train(model, lm_mod.regression_loss(train_ids, train_scores, pad), train_ids, cfg, seed,
                 desc="train gold reward")
    stats = {
        "parameters": sum(p.numel() for p in model.parameters()),
        **lm_mod.regression_fit(model, held_ids, held_scores, pad),
        "train_seconds": time.perf_counter() - start,
    }
    full = expand(model, lambda vocab: lm_mod.make_reward_model(cfg, vocab, eos, eos), pooling).eval()
    with atomic_dir(world_dir / "models" / "reward") as tmp:
        full.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        pooling.save(tmp)
        write_json(stats, tmp / "world_stats.json")
