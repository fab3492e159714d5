"""Chunk-level scorers for CBS: one number per row, higher is better.

Where the scorer's tokenizer is the guided model's, it reads the shared response tokens
incrementally from its stream (each response token is fed once, ever). Otherwise it decodes each
response to text and re-tokenises it with its own tokenizer (``Text*`` scorers), which is what lets
a gpt2 value model guide Mistral at chunk level.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..templates import render_for
from .guidance import HEADS
from .streams import left_pad, pad_id, positions


class ExplicitScorer:
    """``beta * q_last``: the value of the last response token, with EOS appended to a row that
    finished on a stop string. Token head: ``Q(s_T, y_T)``; scalar head: ``V(s_{T+1})``."""

    def __init__(self, head: str, beta: float, eos_id: int):
        if head not in HEADS:
            raise ValueError(f"unknown value head {head!r}; use one of {HEADS}")
        self.head, self.beta, self.eos_id = head, beta, eos_id
        self.roles = {"value": head == "token"}

    def score(self, rows) -> torch.Tensor:
        append_eos = rows.finished & ~rows.ended_eos
        if self.head == "token":
            taken = rows.taken("value")
            q = torch.where(append_eos.to(taken.device), rows.last("value")[:, self.eos_id], taken)
        elif append_eos.any():
            eos = torch.full((rows.n, 1), self.eos_id, dtype=torch.long)
            with_eos = rows.peek("value", eos)[:, 0]
            q = torch.where(append_eos.to(with_eos.device), with_eos, rows.last("value"))
        else:
            q = rows.last("value")
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


class _TextScorer:
    """Re-tokenise ``template(prompt) + response text`` with the scorer's own tokenizer."""

    roles: dict = {}

    def __init__(self, tokenizer, template: str, beta: float):
        self.tokenizer, self.template, self.beta = tokenizer, template, beta

    def encode(self, rows, eos_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ids, mask, and a mask of the response positions (EOS appended where asked)."""
        tok, seqs, n_resp = self.tokenizer, [], []
        for i, text in enumerate(rows.texts()):
            prompt = tok(render_for(tok, self.template, rows.prompt(i)), add_special_tokens=False).input_ids
            response = tok(text, add_special_tokens=False).input_ids + ([tok.eos_token_id] if eos_rows[i] else [])
            seqs.append(prompt + response)
            n_resp.append(len(response))
        ids, mask = left_pad(seqs, pad_id(tok))
        width = ids.shape[1]
        response = torch.arange(width)[None, :] >= width - torch.tensor(n_resp)[:, None]
        return ids, mask, response


class TextExplicitScorer(_TextScorer):
    """``ExplicitScorer`` for a value model whose tokenizer differs from the guided model's."""

    def __init__(self, value_model, tokenizer, template: str, beta: float):
        super().__init__(tokenizer, template, beta)
        self.model = value_model

    @torch.no_grad()
    def score(self, rows) -> torch.Tensor:
        ids, mask, _ = self.encode(rows, rows.finished)
        device = self.model.device
        ids, mask = ids.to(device), mask.to(device)
        values = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).values.float()
        rows.meter.add("value", 1, int(mask.sum()))
        if values.dim() == 3:  # token head: Q(s_T, y_T) is read at the position before y_T
            q = values[:, -2].gather(-1, ids[:, -1:]).squeeze(-1)
        else:
            q = values[:, -1]
        return self.beta * q.to(rows.device)


class TextImplicitScorer(_TextScorer):
    """``ImplicitScorer`` for a small pair whose tokenizer differs from the guided model's."""

    def __init__(self, tuned, untuned, tokenizer, template: str, beta: float):
        super().__init__(tokenizer, template, beta)
        self.tuned, self.untuned = tuned, untuned

    @torch.no_grad()
    def score(self, rows) -> torch.Tensor:
        ids, mask, response = self.encode(rows, rows.ended_eos)
        total = 0.0
        for role, model, sign in (("tuned", self.tuned, 1.0), ("untuned", self.untuned, -1.0)):
            device = next(model.parameters()).device
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions(mask).to(device)).logits.float()
            rows.meter.add(role, 1, int(mask.sum()))
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)
            total = total + sign * (logp * response[:, 1:].to(device)).sum(1).to(rows.device)
        return self.beta * total
