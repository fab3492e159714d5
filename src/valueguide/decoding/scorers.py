"""Chunk-level scorers for CBS: one number per row, higher is better.

Where the scorer's tokenizer is the guided model's, it reads the shared response tokens
incrementally from its stream (each response token is fed once, ever). Otherwise (``Text*``
scorers) it reads the response text in its own tokens from a ``TextStream``, which re-tokenises only
a short tail and feeds each row about one token per token sampled: that is what lets a gpt2 value
model or the Tulu pair guide Mistral.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..heads import HEADS


class ExplicitScorer:
    """``beta * q_last``: the value at the last response token, where the fitted data put the reward
    (EOS when the model emitted it; a row ended by a stop string or by the length limit has none).
    Token head: ``Q(s_T, y_T)``; scalar head: ``V(s_{T+1})``."""

    def __init__(self, head: str, beta: float):
        if head not in HEADS:
            raise ValueError(f"unknown value head {head!r}; use one of {HEADS}")
        self.head, self.beta = head, beta
        self.roles = {"value": head == "token"}

    def score(self, rows) -> torch.Tensor:
        q = rows.taken("value") if self.head == "token" else rows.last("value")
        return self.beta * q.to(rows.device)


class ImplicitScorer:
    """``beta * sum_t psi(s_t, y_t)``: the DPO implicit reward of the response so far."""

    roles = {"tuned": True, "untuned": True}

    def __init__(self, beta: float):
        self.beta = beta

    def score(self, rows) -> torch.Tensor:
        tuned, untuned = rows.taken("tuned").to(rows.device), rows.taken("untuned").to(rows.device)
        return self.beta * (tuned - untuned)


class RewardScorer:
    """The gold reward of prompt + response text (an oracle, for ablations only).

    ``reward`` maps texts to scores (``RewardModel.score`` or any callable); given its tokenizer,
    the tokens it reads are counted too.
    """

    roles: dict = {}

    def __init__(self, reward: Callable, tokenizer=None):
        self.reward, self.tokenizer = reward, tokenizer

    def score(self, rows) -> torch.Tensor:
        texts = [rows.prompt(i) + text for i, text in enumerate(rows.texts())]
        tokens = sum(len(ids) for ids in self.tokenizer(texts).input_ids) if self.tokenizer else 0
        rows.meter.add("reward", 1, tokens)
        return torch.as_tensor(self.reward(texts), dtype=torch.float32, device=rows.device)


class TextExplicitScorer:
    """``ExplicitScorer`` for a value model whose tokenizer differs from the guided model's: the
    value at the last token of its own tokenisation of ``template + response text`` (its EOS appended
    when the guided row ended with EOS), read incrementally (``aligned.TextStream``)."""

    roles = {"value": False}

    def __init__(self, beta: float):
        self.beta = beta

    def score(self, rows) -> torch.Tensor:
        return self.beta * rows.streams["value"].response_scores(rows)["value"].to(rows.device)


class TextImplicitScorer:
    """``ImplicitScorer`` for a small pair whose tokenizer differs from the guided model's:
    ``beta * R`` with ``R`` the log-ratio summed over the pair's own tokens of the response."""

    roles = {"tuned": False, "untuned": False}

    def __init__(self, beta: float):
        self.beta = beta

    def score(self, rows) -> torch.Tensor:
        scores = rows.streams["tuned"].response_scores(rows)
        return self.beta * (scores["tuned"] - scores["untuned"]).to(rows.device)
