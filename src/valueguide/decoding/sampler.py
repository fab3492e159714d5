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

    def kl(self, probs: torch.Tensor, logits: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        """``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` per row, [N] float64 (docs/ALGORITHMS.md §5.4), for
        ``p = probs`` (``self.probs(logits)``, what the token is drawn from) and ``q = self.probs(frozen)``.

        On their supports ``log p = z - lse(z)`` and ``log q = r - lse(r)`` (``z``, ``r`` the tempered logits,
        -inf off the top-k and the nucleus), so ``KL = sum_{p > 0} p (z - r) - lse(z) + lse(r)``: two
        log-sum-exps and one weighted sum, with no [N, V] log-probabilities. A token with ``p = 0`` adds 0;
        one with ``p > 0 = q`` makes the KL infinite, as it is. ``frozen`` may be wider than ``logits`` (a
        model padding its embedding beyond the width the guides cut ``logits`` to): ``q`` keeps its own mass
        there, where ``p`` has none; where it is narrower, ``q`` is 0 past its width."""
        frozen = frozen.to(logits.device)
        if self.temperature == 0:
            same = logits.float().argmax(-1) == frozen.float().argmax(-1)
            return torch.where(same, 0.0, float("inf")).double()
        z, r = self._support(logits.float()), self._support(frozen.float())
        short = z.shape[-1] - r.shape[-1]
        r_at = torch.nn.functional.pad(r, (0, short), value=float("-inf")) if short > 0 else r[:, :z.shape[-1]]
        cross = torch.where(probs > 0, probs * (z - r_at), 0.0).sum(-1, dtype=torch.float64)
        # rounding may leave a KL of equal distributions a hair below 0
        return (cross - torch.logsumexp(z, -1).double() + torch.logsumexp(r, -1).double()).clamp(min=0.0)

    def _support(self, logits: torch.Tensor) -> torch.Tensor:
        """``z / temperature`` on the tokens ``probs`` keeps, -inf elsewhere."""
        z = self._top_k(logits)
        return z.masked_fill(self._outside_nucleus(torch.softmax(z, -1)), float("-inf")) if self.top_p < 1 else z

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
