"""Training throughput of the value fit (tokens/s), measured side by side in one run.

A gpt2 backbone sized like the tiny world's value model (2 layers, width 64, vocabulary 600) is
fitted on synthetic samples shaped like stage sample's (prompt of ~10 tokens, response of ~20), for
each head and each target rule: TD(λ) needs one extra no-grad pass per batch to compute targets,
Monte-Carlo (λ = 1) does not. Throughput counts response tokens trained on per second; the ratio is
to the token head with Monte-Carlo targets, timed in the same run.

    python bench/bench_training.py [--samples 1024] [--threads 1] [--out bench.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

from valueguide.value.fit import fit_value
from valueguide.value.model import ValueModel

VOCAB = 600
CFG = {"template": "{prompt}", "gamma": 1.0, "lr": 3e-3, "batch_size": 32, "epochs": 1, "passes_per_batch": 1,
       "warmup_ratio": 0.05, "max_grad_norm": 1.0}
CASES = {"token head, Monte-Carlo (λ=1)": ("token", 1.0), "token head, TD(λ=0.95)": ("token", 0.95),
         "scalar head, Monte-Carlo (λ=1)": ("scalar", 1.0), "scalar head, TD(λ=0.95)": ("scalar", 0.95)}


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(VOCAB - 2)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def samples(n: int, rng: np.random.Generator) -> pd.DataFrame:
    prompts = [" ".join(f"w{i}" for i in rng.integers(2, VOCAB, size=10)) for _ in range(n)]
    responses = [rng.integers(2, VOCAB, size=int(rng.integers(12, 28))).tolist() for _ in range(n)]
    return pd.DataFrame({"prompt_id": np.arange(n), "prompt": prompts, "response_ids": responses,
                         "reward": rng.normal(size=n)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok, data = tokenizer(), samples(args.samples, np.random.default_rng(0))
    tokens = int(data.response_ids.map(len).sum())
    torch.manual_seed(0)
    backbone = GPT2Model(GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                     bos_token_id=1, eos_token_id=1, pad_token_id=0))
    rows = {}
    for name, (head, lam) in CASES.items():
        model = ValueModel(copy.deepcopy(backbone), head)
        began = time.perf_counter()
        fit_value(data, {**CFG, "lam": lam}, tok, model, seed=0)
        rows[name] = tokens / (time.perf_counter() - began)
    base = rows[next(iter(CASES))]
    print(f"{'case':34s} {'tokens/s':>10s} {'ratio':>7s}")
    for name, rate in rows.items():
        print(f"{name:34s} {rate:10.0f} {rate / base:7.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tokens_per_second": rows, "samples": args.samples, "threads": args.threads}, f, indent=2)


if __name__ == "__main__":
    main()
