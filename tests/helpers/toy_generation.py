"""A world on disk for generation-stage tests: toy gpt2 models sharing one vocabulary (large, small,
tuned, value, reward) and a prompt file; a method decodes its prompts in well under a second."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from tests.helpers.toy_models import make_gpt2, make_tokenizer
from valueguide.value.model import ValueModel

TOK = make_tokenizer()
CBS = {"W": 2, "K": 2, "L": 3, "beta": 1.0}
METHODS = {
    "base": {},
    "ivg": {"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", **CBS}},
    "bon_gold": {"chunk": {"scorer": "gold", "W": 1, "K": 4, "L": None}},
    "fudge": {"token": {"kind": "fudge", "beta": 1.0, "top_k": 4}},
}
PROMPTS = ["good film", "the bad", "h a", "film", "a b c", "bad bad", "the"]


def build(root: Path) -> Path:
    """Models under ``root/models`` (specs ``world:NAME``), ``root/tuned``, ``root/value``, ``root/classifier``,
    ``root/prompts.parquet``."""
    vocab = len(TOK)
    for name, seed in [("small", 1), ("large", 2)]:
        make_gpt2(vocab, seed=seed).save_pretrained(root / "models" / name)
        TOK.save_pretrained(root / "models" / name)
    torch.manual_seed(4)
    reward = GPT2ForSequenceClassification(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=16, n_layer=1,
                                                      n_head=2, num_labels=2, pad_token_id=0)).eval()
    reward.save_pretrained(root / "models" / "reward")
    TOK.save_pretrained(root / "models" / "reward")
    make_gpt2(vocab, seed=5).save_pretrained(root / "tuned")
    value = ValueModel(make_gpt2(vocab, seed=6).transformer, "token",
                       {"template": "{prompt}", "tokenizer": "world:small"})
    torch.nn.init.normal_(value.head.weight)
    value.save_pretrained(root / "value", tokenizer=TOK)
    classifier = ValueModel(make_gpt2(vocab, seed=7).transformer, "token", {"template": "{prompt}",
                                                                            "tokenizer": "world:small"})
    torch.nn.init.normal_(classifier.head.weight)
    classifier.save_pretrained(root / "classifier", tokenizer=TOK)
    pd.DataFrame({"prompt_id": range(len(PROMPTS)), "prompt": PROMPTS}).to_parquet(root / "prompts.parquet")
    return root


def config(**generate) -> dict:
    """A generate-stage config over the toy world: batches of 2 prompts, 5 new tokens."""
    return {
        "seed": 1, "results_dir": "unused", "device": "cpu", "dtype": "auto",
        "models": {"small": {"path": "world:small", "template": "{prompt}"},
                   "large": {"path": "world:large", "template": "the film {prompt}"}},
        "reward_model": "world:reward",
        "fit_implicit": {"mode": "train", "untuned": "small", "tuned": None},
        "fit_value": {"backbone": "world:small", "template": "{prompt}", "head": "token"},
        "fit_classifier": {"backbone": "world:small", "template": "{prompt}"},
        "generate": {"large_models": ["large"], "temperature": 0.7, "top_k": 0, "top_p": 1.0, "max_new_tokens": 5,
                     "stop": [], "batch_size": 2, "methods": METHODS, **generate},
    }
