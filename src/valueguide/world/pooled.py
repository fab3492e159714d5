"""Tiny-world models on the real vocabularies, trained at the cost of the tokens they use.

A tiny-world model's embedding matrix has a row for every token of a real vocabulary (50,257 for
GPT-2, 32,000 for Llama-2 and Mistral), tied to the output layer, but its corpus uses a few thousand
of them. Every row outside the *used* set is one shared vector, so the model trains exactly in a
compact form: the used rows plus one *pooled* row that stands for all the others, its logit raised by
``log(n_unused)`` (the probability of its ``n_unused`` identical tokens together). ``expand`` gives
the full model, whose distribution over the real vocabulary is the compact one with the pooled mass
split evenly; ``compact`` gives back the compact form of such a model (DPO trains it there too).

The used ids are saved beside the model (``pooled_vocabulary.json``); a model without that file is
an ordinary model.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

FILE = "pooled_vocabulary.json"


@dataclass(frozen=True)
class Pooling:
    """Which real ids have their own row (``used``, sorted) in a vocabulary of ``vocab_size``."""

    used: tuple[int, ...]
    vocab_size: int

    @classmethod
    def of(cls, ids, vocab_size: int, always=()) -> "Pooling":
        used = sorted({int(i) for row in ids for i in row} | {int(i) for i in always if i is not None})
        if used and (used[0] < 0 or used[-1] >= vocab_size):
            raise ValueError(f"token ids outside the vocabulary of {vocab_size}")
        return cls(tuple(used), vocab_size)

    @property
    def pooled(self) -> int:
        """The compact index of the pooled row."""
        return len(self.used)

    @property
    def n_unused(self) -> int:
        return self.vocab_size - len(self.used)

    def index(self) -> dict[int, int]:
        return {real: i for i, real in enumerate(self.used)}

    def to_compact(self, rows) -> list[list[int]]:
        """Real ids -> compact ids (an unused id -> the pooled index)."""
        index, pooled = self.index(), self.pooled
        return [[index.get(int(i), pooled) for i in row] for row in rows]

    def save(self, folder: str | Path) -> None:
        Path(folder, FILE).write_text(json.dumps({"vocab_size": self.vocab_size, "used": list(self.used)}) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "Pooling | None":
        path = Path(folder, FILE)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(tuple(data["used"]), data["vocab_size"])


def _embeddings(model: nn.Module) -> nn.Embedding:
    return model.get_input_embeddings()


def _pooled_head(model: nn.Module, pooling: Pooling) -> None:
    """Tie the output layer to the embeddings and give the pooled logit its ``+ log(n_unused)``."""
    weight = _embeddings(model).weight
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=True, device=weight.device, dtype=weight.dtype)
    head.weight = weight
    bias = torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)
    if pooling.n_unused:
        bias[pooling.pooled] = math.log(pooling.n_unused)
    head.bias = nn.Parameter(bias, requires_grad=False)
    model.set_output_embeddings(head)


def compact_model(make, pooling: Pooling) -> nn.Module:
    """A fresh compact model: ``make(vocab_size)`` builds one of the architecture (tied, if it has an
    output layer over the vocabulary; a classifier has none)."""
    model = make(pooling.pooled + 1)
    if model.get_output_embeddings() is not None:
        _pooled_head(model, pooling)
        _start_unused_unlikely(model, pooling)
    return model


@torch.no_grad()
def _start_unused_unlikely(model: nn.Module, pooling: Pooling, margin: float = 10.0) -> None:
    """Start training with the unused tokens ``margin`` nats below the rest, as a model trained on real
    text has them. From a random start the pooled row holds almost all the probability (its tokens are
    nearly the whole vocabulary), and a tiny model spends its few steps pushing it down instead of
    learning the text. Feature 0 of the last hidden state is made a constant (the final norm's bias, exactly;
    for an RMSNorm, about: a constant carried from the embeddings) and the pooled row points against it."""
    table = _embeddings(model).weight
    body = model.base_model
    final = getattr(body, "ln_f", None) or getattr(body, "norm", None)
    low = math.log(max(pooling.n_unused, 1)) + margin
    table[pooling.pooled] = 0.0
    if getattr(final, "bias", None) is not None:
        final.bias.zero_()
        final.bias[0], final.weight[0] = 1.0, 0.0  # feature 0 of the output: exactly 1
        table[:pooling.pooled, 0] = 0.0
        table[pooling.pooled, 0] = -low
    else:
        spread = float(table[:pooling.pooled, 1:].std())
        table[:pooling.pooled, 0] = 1.0
        feature = math.sqrt(table.shape[1]) / math.sqrt(1.0 + (table.shape[1] - 1) * spread ** 2)
        table[pooling.pooled, 0] = -low / feature


def expand(compact: nn.Module, make, pooling: Pooling) -> nn.Module:
    """The full model of a compact one: ``make(vocab_size)`` builds an empty full one, tied."""
    full = make(pooling.vocab_size)
    target = full.state_dict()
    state = {k: v for k, v in compact.state_dict().items() if k in target and target[k].shape == v.shape}
    rows = _embeddings(compact).weight.detach()
    table = rows[pooling.pooled].expand(pooling.vocab_size, -1).clone()
    table[list(pooling.used)] = rows[:pooling.pooled]
    state[_embedding_key(full)] = table
    full.load_state_dict(state, strict=False)
    if full.get_output_embeddings() is not None:
        full.tie_weights()
        if full.get_output_embeddings().weight is not _embeddings(full).weight:
            raise ValueError(f"{type(full).__name__} did not tie its output layer to its embeddings")
    return full


def expand_like(compact_model_: nn.Module, config, pooling: Pooling) -> nn.Module:
    """``expand`` into a causal LM of ``config`` (a full model's), e.g. after training a compact copy."""
    from transformers import AutoModelForCausalLM

    def make(vocab_size: int) -> nn.Module:
        full_config = copy.deepcopy(config)
        full_config.vocab_size = vocab_size
        return AutoModelForCausalLM.from_config(full_config)

    return expand(compact_model_, make, pooling)


def compact(full: nn.Module, pooling: Pooling) -> nn.Module:
    """The compact form of a full model whose unused rows are all one vector (a pooled model)."""
    model = copy.deepcopy(full)
    table = _embeddings(full).weight.detach()
    unused = next((i for i in range(pooling.vocab_size) if i not in set(pooling.used)), None)
    rows = table[list(pooling.used)]
    if unused is not None:
        rows = torch.cat([rows, table[unused:unused + 1]])
    model.resize_token_embeddings(rows.shape[0], mean_resizing=False)
    with torch.no_grad():
        _embeddings(model).weight.copy_(rows)
    _pooled_head(model, pooling)
    return model


def _embedding_key(model: nn.Module) -> str:
    target = _embeddings(model).weight
    return next(k for k, v in model.state_dict(keep_vars=True).items() if v is target)
