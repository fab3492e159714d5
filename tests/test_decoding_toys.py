"""Enumerable worlds for the decoding tests: a tabular causal LM, all responses and their
probabilities, exact best-of-N and KL-optimal policies, and table scorers.

``TabularLM`` answers from a table of the real tokens seen so far, but speaks the transformers
protocol (attention mask, position ids, a ``DynamicCache`` that follows row copies), so the decoder
drives it exactly as it drives a transformer.
"""

from __future__ import annotations

import itertools
import math
import zlib
from functools import lru_cache
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, GPT2Config

from tests.helpers.toy_models import make_tokenizer

WORDS = ["a", "b", "c"]
PAD, EOS = 0, 1
TOKENS = [EOS, 2, 3, 4]  # what a response is made of
BLOCKED = -50.0  # logit of the pad token: never drawn in practice



class TabularLM(torch.nn.Module):
    """A causal LM whose next-token logits are ``logits_fn(tuple of real tokens so far)``."""

    def __init__(self, vocab_size: int, logits_fn):
        super().__init__()
        self.config = GPT2Config(vocab_size=vocab_size, n_layer=1, n_embd=4, n_head=1, bos_token_id=EOS,
                                 eos_token_id=EOS, pad_token_id=PAD)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device and dtype
        self.logits_fn = lru_cache(maxsize=None)(logits_fn)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        n_rows, n = input_ids.shape
        new = input_ids[:, None, :, None].float()
        history = cache.update(new, new, 0)[0] if cache is not None else new
        history = history[:, 0, :, 0].long()
        width = history.shape[1]
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(history, dtype=torch.bool)
        logits = torch.empty(n_rows, n, self.config.vocab_size)
        for b in range(n_rows):
            for j in range(n):
                end = width - n + j + 1
                logits[b, j] = self.logits_fn(tuple(history[b, :end][mask[b, :end]].tolist()))
        return SimpleNamespace(logits=logits)


def random_logits(prefix: tuple, seed: int, vocab: int, scale: float = 1.0) -> torch.Tensor:
    """Stable pseudo-random logits of a prefix, pad blocked."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{prefix}".encode()))
    z = torch.randn(vocab, generator=g) * scale
    z[PAD] = BLOCKED
    return z


def tokenizer():
    return make_tokenizer(WORDS)


def responses(max_len: int) -> list[tuple]:
    """Every response: words, possibly ending with EOS, at most ``max_len`` tokens (truncated ones too)."""
    out = []
    for n in range(max_len + 1):
        for words in itertools.product(TOKENS[1:], repeat=n):
            if n < max_len:
                out.append(words + (EOS,))
            else:
                out.append(words)
    return out


def response_prob(policy_fn, prompt_ids: tuple, response: tuple) -> float:
    """Probability of a whole response under a tabular policy (temperature 1)."""
    logp, prefix = 0.0, prompt_ids
    for tok in response:
        logp += float(torch.log_softmax(policy_fn(prefix), -1)[tok])
        prefix = prefix + (tok,)
    return math.exp(logp)


def best_of_n_probs(probs: dict, reward: dict, n: int) -> dict:
    """Exact distribution of the argmax-reward response among n i.i.d. draws (distinct rewards)."""
    out, below = {}, 0.0
    for y in sorted(probs, key=lambda y: reward[y]):
        out[y] = (below + probs[y]) ** n - below ** n
        below += probs[y]
    return out


def kl_optimal_logits_fn(policy_fn, prompt_ids: tuple, reward: dict, beta: float, max_len: int):
    """Logits of ``pi*(y) ∝ pi(y) exp(r(y)/beta)`` per token: ``pi(a|s) Z(s+a) / Z(s)``."""

    @lru_cache(maxsize=None)
    def log_z(response: tuple) -> float:
        if (response and response[-1] == EOS) or len(response) == max_len:
            return reward[response] / beta
        logp = torch.log_softmax(policy_fn(prompt_ids + response), -1)
        return float(torch.logsumexp(torch.stack([logp[a] + log_z(response + (a,)) for a in TOKENS]), 0))

    def logits(prefix: tuple) -> torch.Tensor:
        response = prefix[len(prompt_ids):]
        z = torch.full((len(tokenizer()),), BLOCKED)
        if len(response) >= max_len or (response and response[-1] == EOS):
            return z  # never asked for during decoding
        logp = torch.log_softmax(policy_fn(prefix), -1)
        for a in TOKENS:
            z[a] = logp[a] + log_z(response + (a,)) - log_z(response)
        return z

    return logits


class TableScorer:
    """A chunk scorer reading a table of response ids (partial responses score ``default``)."""

    roles: dict = {}

    def __init__(self, table, default: float = 0.0):
        self.table, self.default, self.calls = table, default, []

    def score(self, rows) -> torch.Tensor:
        keys = [tuple(rows.response(i)) for i in range(rows.n)]
        self.calls.append(keys)
        return torch.tensor([float(self.table(k)) if callable(self.table) else self.table.get(k, self.default)
                             for k in keys])


def test_tabular_lm_follows_the_cache_protocol():
    """Fed in pieces, with padding and a row copy, it sees exactly what a full pass sees."""
    model = TabularLM(6, lambda prefix: torch.tensor([float(sum(prefix)), len(prefix), 0, 0, 0, 0]))
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([[0, 2, 3], [4, 4, 4]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    model(ids, attention_mask=mask, cache=cache, use_cache=True)
    cache.reorder_cache(torch.tensor([1, 1, 0]))
    out = model(torch.tensor([[5], [0], [2]]), attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]]),
                cache=cache, use_cache=True).logits[:, -1, :2]
    assert out.tolist() == [[17.0, 4.0], [12.0, 3.0], [7.0, 3.0]]


def test_exact_best_of_n_sums_to_one_and_favours_high_reward():
    probs = {"x": 0.5, "y": 0.3, "z": 0.2}
    bon = best_of_n_probs(probs, {"x": 0.0, "y": 1.0, "z": 2.0}, 3)
    assert math.isclose(sum(bon.values()), 1.0)
    assert math.isclose(bon["x"], 0.125) and math.isclose(bon["z"], 1 - 0.8 ** 3)
