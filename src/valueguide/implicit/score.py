"""The implicit reward β·Σ_t [log π*(y_t|s_t) − log π(y_t|s_t)] of responses, and pairwise accuracy.

Each model sees the prompt through its own template; the response token ids are shared, so the
per-token log-ratios summed here are exactly the ψ(s_t, y_t) the decoders add to the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..templates import render_for


def encode_prompts(tokenizer, template: str, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt token ids exactly as the sampler and the decoders build them (no added special tokens)."""
    texts = [render_for(tokenizer, template, p) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_responses(tokenizer, texts: Sequence[str], ended_with_eos: Sequence[bool]) -> list[list[int]]:
    """Response ids in another tokenizer's vocabulary, keeping the EOS the sampling policy emitted."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [row + [tokenizer.eos_token_id] if eos else row for row, eos in zip(ids, ended_with_eos)]


@torch.no_grad()
def response_logprobs(model, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                      batch_size: int = 32) -> np.ndarray:
    """Σ_t log π(y_t | x, y_<t) per response, in float64 (right padding keeps absolute positions exact)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(response_ids)} responses")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("an empty prompt leaves the first response token without a context to score it in")
    device = next(model.parameters()).device
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    order = np.argsort(lengths, kind="stable")  # similar lengths per batch: less padding
    out = np.zeros(len(lengths), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(lengths[i] for i in rows)
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        attention = torch.zeros(len(rows), width, dtype=torch.long)
        scored = torch.zeros(len(rows), width, dtype=torch.bool)
        for k, i in enumerate(rows):
            input_ids[k, :lengths[i]] = torch.tensor([*prompt_ids[i], *response_ids[i]])
            attention[k, :lengths[i]] = 1
            scored[k, len(prompt_ids[i]):lengths[i]] = True
        input_ids, attention, scored = input_ids.to(device), attention.to(device), scored.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        targets = input_ids[:, 1:].unsqueeze(-1)
        token_logps = logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)
        sums = (token_logps * scored[:, 1:]).sum(-1)
        out[rows] = sums.double().cpu().numpy()
    return out


def implicit_rewards(tuned, untuned, response_ids, tuned_prompt_ids, untuned_prompt_ids, beta: float,
                     batch_size: int = 32) -> np.ndarray:
    """β·Σ_t ψ(s_t, y_t): the DPO implicit reward of each (partial) response."""
    tuned_logps = response_logprobs(tuned, tuned_prompt_ids, response_ids, batch_size)
    untuned_logps = response_logprobs(untuned, untuned_prompt_ids, response_ids, batch_size)
    return beta * (tuned_logps - untuned_logps)


def pairwise_accuracy(score_a, score_b, reward_a, reward_b) -> float:
    """How often the scores order a pair as the rewards do; reward ties are left out, score ties count ½.

    Counting score ties as ½ makes a constant scorer (ψ ≡ 0 for an untuned pair) exactly 0.5.
    """
    score_diff = np.asarray(score_a, dtype=np.float64) - np.asarray(score_b, dtype=np.float64)
    reward_diff = np.asarray(reward_a, dtype=np.float64) - np.asarray(reward_b, dtype=np.float64)
    judged = reward_diff != 0
    if not judged.any():
        return float("nan")
    agree = np.sign(score_diff[judged]) * np.sign(reward_diff[judged])
    return float(np.mean((agree + 1) / 2))
