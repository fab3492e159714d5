"""Token-level guidance: small objects that adjust the guided model's next-token logits.

A guide names the model roles it reads (``roles``: role -> whether the stream must track the
scores of the tokens fed, see ``Stream``) and maps ``(logits, base_logits, rows)`` to new logits.
Every model's output is trimmed to the common width, because a model may pad its embedding
matrix beyond the tokenizer's vocabulary.
"""

from __future__ import annotations

import torch

from ..heads import HEADS


def common_width(*tensors: torch.Tensor) -> int:
    return min(t.shape[-1] for t in tensors)


def top_candidates(base: torch.Tensor, width: int, top_k: int | None) -> torch.Tensor:
    """``C = top-k(z_L)`` per row ([N, k]); k 0/None: the whole vocabulary."""
    k = min(top_k or width, width)
    return base[:, :width].topk(k, dim=-1).indices


def add_bonus(logits: torch.Tensor, candidates: torch.Tensor, bonus: torch.Tensor, mask_outside: bool) -> torch.Tensor:
    """``z(a) + bonus(a)`` on the candidates; outside them ``z`` stays, or is masked."""
    candidates, bonus = candidates.to(logits.device), bonus.to(logits.device, logits.dtype)
    if mask_outside:
        out = torch.full_like(logits, float("-inf"))
        return out.scatter(-1, candidates, logits.gather(-1, candidates) + bonus)
    return logits.scatter_add(-1, candidates, bonus)


class ImplicitGuide:
    """Emulated fine-tuning: ``z' = z_L + w * (log pi_S*(a|s^S) - log pi_S(a|s^S))``, over the whole
    vocabulary, or with ``top_k`` over the top-k candidates only (outside them ``z_L`` stays, or is
    masked)."""

    roles = {"tuned": False, "untuned": False}

    def __init__(self, w: float = 1.0, top_k: int | None = 0, mask_outside_topk: bool = False):
        self.w, self.top_k, self.mask_outside_topk = w, top_k, mask_outside_topk

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        tuned, untuned = rows.last("tuned").to(logits.device), rows.last("untuned").to(logits.device)
        width = common_width(logits, base, tuned, untuned)
        psi = torch.log_softmax(tuned[:, :width], -1) - torch.log_softmax(untuned[:, :width], -1)
        if not self.top_k:
            return logits[:, :width] + self.w * psi
        cand = top_candidates(base, width, self.top_k)
        return add_bonus(logits[:, :width], cand, self.w * psi.gather(-1, cand), self.mask_outside_topk)


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

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        if self.head == "token":
            values = rows.last("value")
            width = common_width(logits, base, values)
            cand = top_candidates(base, width, self.top_k)
            q = values.gather(-1, cand.to(values.device)).to(logits.device)
        else:
            width = min(common_width(logits, base), rows.streams["value"].config.vocab_size)
            cand = top_candidates(base, width, self.top_k)
            q = rows.peek("value", cand).to(logits.device)
        bonus = self.beta * (q - q.mean(-1, keepdim=True))
        return add_bonus(logits[:, :width], cand, bonus, self.mask_outside_topk)


class TextImplicitGuide:
    """EFT across vocabularies, defined on text, over the guided model's top-k candidates ``C``:
    ``z(a) + w * psi(a)`` with ``psi(a) = R(u + text(a)) - R(u)``, where ``R`` sums ``log pi_S* -
    log pi_S`` over the small tokenizer's tokens of the response (see ``aligned.TextStream``).
    Tokens outside ``C`` are masked: ``psi`` is defined on ``C`` only, and an unguided logit would
    compete with the guided ones on another scale."""

    roles = {"tuned": False, "untuned": False}

    def __init__(self, w: float, top_k: int, eos_id: int | None):
        self.w, self.top_k, self.eos_id = w, top_k, eos_id

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        width = common_width(logits, base)
        cand = top_candidates(base, width, self.top_k)
        after, now = rows.streams["tuned"].candidate_scores(rows, cand, self.eos_id)
        psi = (after["tuned"] - after["untuned"]) - (now["tuned"] - now["untuned"])[:, None]
        return add_bonus(logits[:, :width], cand, self.w * psi, mask_outside=True)


class TextExplicitGuide:
    """VAS across vocabularies: ``z(a) + beta * (Q(a) - mean_C Q)`` on the top-k candidates ``C``, with
    ``Q(a)`` the value model's value of ``template + u + text(a)`` at its last token; tokens outside
    ``C`` are masked (no value is read for them, see ``TextImplicitGuide``)."""

    roles = {"value": False}

    def __init__(self, beta: float, top_k: int, eos_id: int | None):
        self.beta, self.top_k, self.eos_id = beta, top_k, eos_id

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        width = common_width(logits, base)
        cand = top_candidates(base, width, self.top_k)
        q = rows.streams["value"].candidate_scores(rows, cand, self.eos_id)[0]["value"]
        bonus = self.beta * (q - q.mean(-1, keepdim=True))
        return add_bonus(logits[:, :width], cand, bonus, mask_outside=True)


class FudgeGuide:
    """FUDGE's Bayes rule on the candidate set ``C = top-k(z_L)``: ``z'(a) = z(a) + beta * log sigma(c(s, a))``,
    with ``c(s, a)`` the prefix classifier's logit that prefix ``s + a`` ends in a response whose reward is
    above the median (a token head scores every ``a`` from one pass). Tokens outside ``C`` are masked: FUDGE
    renormalises over the top-k only. ``beta`` 1 is ``p(a | s, label) ∝ p(a | s) P(label | s, a)``."""

    roles = {"classifier": False}

    def __init__(self, beta: float = 1.0, top_k: int | None = 20):
        self.beta, self.top_k = beta, top_k

    def adjust(self, logits: torch.Tensor, base: torch.Tensor, rows) -> torch.Tensor:
        scores = rows.last("classifier")
        width = common_width(logits, base, scores)
        cand = top_candidates(base, width, self.top_k)
        log_label = torch.nn.functional.logsigmoid(scores.gather(-1, cand.to(scores.device)).float())
        return add_bonus(logits[:, :width], cand, self.beta * log_label, mask_outside=True)
