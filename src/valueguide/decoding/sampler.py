"""Turning (guided) next-token logits into a distribution and drawing from it.

Draws use the inverse CDF of one uniform per row, taken from a CPU ``torch.Generator``: the same
seed gives the same tokens on any device, and a token of probability zero is never drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """``softmax(z / temperature)`` restricted to the top-k logits and the top-p nucleus.

    ``temperature == 0`` is greedy decoding; ``top_k`` 0/None keeps every token; ``top_p`` 1 keeps
    the whole distribution.
    """

    temperature: float = 1.0
    top_k: int | None = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a token is drawn from, [N, V] float32."""
        logits = logits.float()
        if self.temperature == 0:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        p = torch.softmax(self._top_k(logits), -1)
        if self.top_p < 1:
            p = p.masked_fill(self._outside_nucleus(p), 0.0)
            p = p / p.sum(-1, keepdim=True)
        return p

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``log probs(logits)`` in float64, from a log-softmax (no underflow to 0 on the support): the
        same support as ``probs``, -inf off it: what ``kl_rows`` reads."""
        logits = logits.float()
        if self.temperature == 0:
            return self.probs(logits).double().log()
        z = self._top_k(logits)
        if self.top_p < 1:
            z = z.masked_fill(self._outside_nucleus(torch.softmax(z, -1)), float("-inf"))
        return torch.log_softmax(z.double(), -1)

    def _top_k(self, logits: torch.Tensor) -> torch.Tensor:
        """``z / temperature``, -inf below the k-th largest."""
        z = logits / self.temperature
        if self.top_k and self.top_k < z.shape[-1]:
            kth = z.topk(self.top_k, dim=-1).values[:, -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        return z

    def _outside_nucleus(self, p: torch.Tensor) -> torch.Tensor:
        """The tokens past the top-p nucleus of ``p``: the mass strictly above them is ``top_p`` or more."""
        sorted_p, order = p.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        return torch.zeros_like(p, dtype=torch.bool).scatter(-1, order, before >= self.top_p)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` per row, [N] float64, from float64 log-probabilities
    (``Sampling.log_probs``). A token with ``p(a) = 0`` adds 0; one with ``p(a) > 0 = q(a)`` makes the row's
    KL infinite, as it is. ``q`` may be wider than ``p`` (a model padding its embedding beyond the width the
    guides cut ``p`` to): its own mass there is kept in its normalisation, and ``p`` has none there; where
    ``q`` is narrower, ``q`` is 0 past its width."""
    log_q = log_q.to(log_p.device)
    short = log_p.shape[-1] - log_q.shape[-1]
    if short > 0:
        log_q = torch.nn.functional.pad(log_q, (0, short), value=float("-inf"))
    log_q = log_q[:, :log_p.shape[-1]]
    terms = log_p.exp() * (log_p - log_q)
    return torch.where(log_p > float("-inf"), terms, 0.0).sum(-1)


BLOCK = 1024  # tokens per block of the two-level inverse CDF


def draw(probs: torch.Tensor, generator: torch.Generator | None, block: int = BLOCK) -> torch.Tensor:
    """One token per row by inverse CDF: the first token whose cumulative mass exceeds ``u`` times the
    row's mass.

    The CDF is taken at two levels, over the blocks' masses (float32 sums of ``block`` tokens, to
    about 1e-7 of each) and then inside the chosen block (float64): one pass over the row instead of
    a float64 cumulative sum of all of it, which took two fifths of the base policy's sampling over a
    50,257-token vocabulary. A token of probability zero is never drawn.
    """
    n, vocab = probs.shape
    u = torch.rand(n, 1, generator=generator).to(probs.device, torch.float64)
    whole = vocab - vocab % block
    sums = [probs[:, :whole].reshape(n, -1, block).sum(-1)] if whole else []
    if whole < vocab:
        sums.append(probs[:, whole:].sum(-1, keepdim=True))
    mass = torch.cat(sums, 1).double()
    cdf = mass.cumsum(-1)
    target = u * cdf[:, -1:]
    chosen = _first_above(cdf, target, mass)
    index = chosen * block + torch.arange(block, device=probs.device)
    inside = index < vocab
    weights = probs.gather(1, index.clamp(max=vocab - 1)).double().masked_fill(~inside, 0.0)
    offset = _first_above(weights.cumsum(-1), target - (cdf.gather(1, chosen) - mass.gather(1, chosen)), weights)
    return (chosen * block + offset).squeeze(-1)


def _first_above(cdf: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[N, 1] index of the first entry whose cumulative weight exceeds ``target``; where rounding puts
    ``target`` at or past the last entry, the last entry of positive weight (never one of weight 0)."""
    first = torch.searchsorted(cdf, target, right=True)
    last_positive = weights.shape[1] - 1 - (weights > 0).flip(-1).to(torch.int8).argmax(-1, keepdim=True)
    return torch.minimum(first, last_positive)
