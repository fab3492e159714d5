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
        z = logits / self.temperature
        if self.top_k and self.top_k < z.shape[-1]:
            kth = z.topk(self.top_k, dim=-1).values[:, -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        p = torch.softmax(z, -1)
        if self.top_p < 1:
            sorted_p, order = p.sort(-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
            drop = torch.zeros_like(p, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
            p = p.masked_fill(drop, 0.0)
            p = p / p.sum(-1, keepdim=True)
        return p


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row by inverse CDF: the first token whose cumulative mass exceeds u."""
    u = torch.rand(probs.shape[0], 1, generator=generator).to(probs.device, torch.float64)
    cdf = probs.double().cumsum(-1)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    return idx.clamp(max=probs.shape[-1] - 1)
