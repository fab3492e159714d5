"""Token-level guidance: small objects that adjust the guided model's next-token logits.

A guide names the model roles it reads (``roles``: role -> whether the stream must track the
scores of the tokens fed, see ``Stream``) and maps ``(logits, base_logits, rows)`` to new logits.
Every model's output is trimmed to the common width, because a model may pad its embedding
matrix beyond the tokenizer's vocabulary.
"""

from __future__ import annotations

import torch

HEADS = ("token", "scalar")


def common_width(*tensors: torch.Tensor) -> int:
    return min(t.shape[-1] for t in tensors)


class ImplicitGuide:
    """Emulated fine-tuning: ``z' = z_L + w * (log pi_S*(a|s^S) - log pi_S(a|s^S))``."""

    roles = {"tuned": False, "untuned": False}

    def __init__(self, w: float = 1.0):
        self.w = w

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        tuned, untuned = rows.last("tuned").to(logits.device), rows.last("untuned").to(logits.device)
        width = common_width(logits, tuned, untuned)
        psi = torch.log_softmax(tuned[:, :width], -1) - torch.log_softmax(untuned[:, :width], -1)
        return logits[:, :width] + self.w * psi


class ExplicitGuide:
    """Value-augmented sampling on the candidate set ``C = top-k(z_L)``.

    ``z'(a) = z(a) + beta * (Q(s, a) - mean_C Q)`` for ``a`` in C; tokens outside C keep their
    logit or, with ``mask_outside_topk``, are removed. ``top_k`` 0/None scores the full vocabulary.
    A token head scores C from the value model's output at the last token; a scalar head scores
    C by appending each candidate in one batched pass over the shared prefix cache.
    """

    roles = {"value": False}

    def __init__(self, head: str, beta: float = 1.0, top_k: int | None = 20, mask_outside_topk: bool = False):
        if head not in HEADS:
            raise ValueError(f"unknown value head {head!r}; use one of {HEADS}")
        self.head, self.beta, self.top_k, self.mask_outside_topk = head, beta, top_k, mask_outside_topk

    def candidates(self, base: torch.Tensor, width: int) -> torch.Tensor:
        k = min(self.top_k or width, width)
        return base[:, :width].topk(k, dim=-1).indices

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        if self.head == "token":
            values = rows.last("value")
            width = common_width(logits, base, values)
            cand = self.candidates(base, width)
            q = values.gather(-1, cand.to(values.device)).to(logits.device)
        else:
            width = min(common_width(logits, base), rows.streams["value"].config.vocab_size)
            cand = self.candidates(base, width)
            q = rows.peek("value", cand).to(logits.device)
        bonus = self.beta * (q - q.mean(-1, keepdim=True))
        logits = logits[:, :width]
        if self.mask_outside_topk:
            out = torch.full_like(logits, float("-inf"))
            return out.scatter(-1, cand, logits.gather(-1, cand) + bonus)
        return logits.scatter_add(-1, cand, bonus)
