"""Tiny causal LMs of the paper's families (gpt2, Mistral, Mixtral), briefly pretrained on the corpus."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
)

MAX_POSITIONS = 256
# GPT-2's configs default to dropout 0.1; the Llama-like ones to none. The world's models train for a
# few hundred steps, far from overfitting, and dropout sends attention down torch's slow path on a CPU
# (it took a third of a world model's training): none anywhere.
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)


def make_lm(spec: dict, vocab_size: int, eos_id: int, pad_id: int, bos_id: int | None = None) -> torch.nn.Module:
    """A freshly initialised causal LM from a world model spec ({arch, layers, width, heads, experts}),
    its output layer tied to its embeddings."""
    arch, layers, width, heads = spec["arch"], spec["layers"], spec["width"], spec["heads"]
    common = dict(vocab_size=vocab_size, bos_token_id=eos_id if bos_id is None else bos_id, eos_token_id=eos_id,
                  pad_token_id=pad_id)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=heads,
                                          n_positions=MAX_POSITIONS, **NO_DROPOUT, **common))
    llama_like = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                      max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True, **common)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**llama_like))
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=None, **llama_like))
    if arch == "mixtral":
        return MixtralForCausalLM(MixtralConfig(num_local_experts=spec.get("experts", 4),
                                                num_experts_per_tok=2, sliding_window=None, **llama_like))
    raise ValueError(f"unknown world architecture {arch!r}; use gpt2, llama, mistral or mixtral")


def make_reward_model(spec: dict, vocab_size: int, eos_id: int, pad_id: int) -> GPT2ForSequenceClassification:
    """A one-logit sequence regressor: the gold reward is its output, as with a preference reward model."""
    cfg = GPT2Config(n_layer=spec["layers"], n_embd=spec["width"], n_head=2, n_positions=MAX_POSITIONS,
                     vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id,
                     num_labels=1, problem_type="regression", **NO_DROPOUT)
    return GPT2ForSequenceClassification(cfg)


def _batches(ids: list[list[int]], batch_size: int, steps: int, generator: torch.Generator):
    """Endless shuffled passes over the data, ``steps`` batches in all."""
    order = torch.randperm(len(ids), generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > len(ids):
            order, cursor = torch.randperm(len(ids), generator=generator), 0
        yield order[cursor:cursor + batch_size].tolist()
        cursor += batch_size


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(model, loss_fn, data, cfg: dict, seed: int, desc: str) -> list[float]:
    """A plain AdamW loop with warmup and cosine decay; returns the loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01, fused=True)
    steps = cfg["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, max(1, steps // 20)))
    model.train()
    losses = []
    bar = tqdm(_batches(data, cfg["batch_size"], steps, generator), total=steps, desc=desc, mininterval=2)
    for batch in bar:
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return losses


def pack(ids: list[list[int]], block: int) -> list[list[int]]:
    """Concatenate EOS-terminated texts into one stream cut into equal blocks: no padding is wasted."""
    stream = [t for row in ids for t in row]
    return [stream[i:i + block] for i in range(0, len(stream) - block + 1, block)]


def lm_loss(blocks: list[list[int]]):
    def loss(model, batch):
        input_ids = torch.tensor([blocks[i] for i in batch])
        return model(input_ids=input_ids, labels=input_ids).loss
    return loss


def regression_loss(ids: list[list[int]], targets: list[float], pad_id: int):
    def loss(model, batch):
        input_ids, mask = _pad_right([ids[i] for i in batch], pad_id)
        target = torch.tensor([targets[i] for i in batch], dtype=torch.float32)
        return model(input_ids=input_ids, attention_mask=mask, labels=target).loss
    return loss


@torch.no_grad()
def mean_lm_loss(model, ids: list[list[int]], pad_id: int, batch_size: int = 256) -> float:
    total, count = 0.0, 0
    for start in range(0, len(ids), batch_size):
        input_ids, mask = _pad_right(ids[start:start + batch_size], pad_id)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        target = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum").item()
        count += int((target != -100).sum())
    return total / count


@torch.no_grad()
def regression_fit(model, ids: list[list[int]], targets: list[float], pad_id: int, batch_size: int = 256) -> dict:
    """R² of the predictions and how often their sign is the target's."""
    predictions = []
    for start in range(0, len(ids), batch_size):
        input_ids, mask = _pad_right(ids[start:start + batch_size], pad_id)
        predictions.append(model(input_ids=input_ids, attention_mask=mask).logits[:, 0])
    predicted, target = torch.cat(predictions).double(), torch.tensor(targets, dtype=torch.float64)
    r2 = 1.0 - float(((predicted - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())
    return {"heldout_r2": r2, "heldout_sign_accuracy": float(((predicted > 0) == (target > 0)).double().mean())}
