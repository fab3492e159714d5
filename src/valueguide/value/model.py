"""The explicit value model Q_phi: a transformer body with a token or scalar value head.

- ``token`` head (FUDGE/IVG): ``values[:, t, a] = Q(prefix ending at t, next token a)``, so one
  forward pass scores every candidate next token.
- ``scalar`` head (VAS): ``values[:, t] = V(prefix ending at t)``.

Both heads start at zero, so every prediction starts at 0 (docs/ALGORITHMS.md §2.1).

The second half says how the model reads a (prompt, response): templated prompt ids followed by the
response ids, left padded; fitting, diagnostics and the decoders' scorers all go through it.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel

from .. import padding
from ..artifacts import ArtifactError, atomic_dir, read_json
from ..heads import HEADS, head_at
from ..models import LoadOptions, resolve_spec, same_vocabulary, torch_dtype
from ..specs import ModelNotFoundError
from ..templates import render_for
from ..texts import decode, encode_joint

CONFIG_FILE = "value_config.json"
HEAD_FILE = "value_head.safetensors"


@dataclass
class ValueOutput:
    values: torch.Tensor  # token head [B, T, V]; scalar head [B, T]
    past_key_values: Any = None  # the backbone's cache when use_cache=True


class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: str, meta: dict | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown value head {head!r}; use one of {HEADS}")
        config = backbone.config
        self.backbone = backbone
        self.head_kind = head
        self.head = nn.Linear(config.hidden_size, config.vocab_size if head == "token" else 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.head.to(backbone.device)  # float32 whatever the backbone's dtype: it is trained and tiny
        self.meta = {**(meta or {}), "head": head, "vocab_size": config.vocab_size,
                     "hidden_size": config.hidden_size}
        # transformers 5 renamed the cache argument ``past_key_values`` -> ``cache``.
        params = inspect.signature(type(backbone).forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None,
                use_cache: bool = False, read: torch.Tensor | None = None) -> ValueOutput:
        """Values at every position of ``input_ids``.

        With left padding pass a 2-D ``attention_mask`` (covering cached + new tokens, as in HF):
        unless given, position ids are derived from it, so a padded row scores like the unpadded one.
        ``read`` ([B, T] bool): the only positions whose values are wanted; the head runs on those alone
        (a token head's is vocabulary-wide) and the others read 0.
        """
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=use_cache, **{self._cache_arg: past_key_values})
        values = head_at(self.head, out.last_hidden_state.to(self.head.weight), read)
        if self.head_kind == "scalar":
            values = values.squeeze(-1)
        return ValueOutput(values, getattr(out, self._cache_arg) if use_cache else None)

    def taken(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``q_t`` of the token at every position, [B, T] (as ``response_values`` reads it, unmasked;
        0 at position 0 for a token head). A token head uses only the rows of the tokens taken, so
        fitting costs the same on a 50,000-token vocabulary as on a small one."""
        position_ids = None
        if attention_mask is not None and attention_mask.dim() == 2:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               **{self._cache_arg: None}).last_hidden_state.to(self.head.weight)
        if self.head_kind == "scalar":
            return self.head(hidden).squeeze(-1)
        nxt = input_ids[:, 1:]
        q = (hidden[:, :-1] * self.head.weight[nxt]).sum(-1) + self.head.bias[nxt]
        return torch.cat([torch.zeros_like(q[:, :1]), q], 1)

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def from_backbone(cls, spec: str, head: str, world_dir=None, options: LoadOptions = LoadOptions(),
                      meta: dict | None = None, lora: dict | None = None) -> "ValueModel":
        """A fresh value model on the body of the causal LM ``spec`` (its LM head is not loaded)."""
        try:
            backbone = _load_backbone(resolve_spec(spec, world_dir), options)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot load the value backbone {spec!r}: {exc}") from exc
        model = cls(backbone, head, {"backbone": spec, "tokenizer": spec, **(meta or {})})
        if lora:
            model.add_lora(lora)
        return model

    def add_lora(self, lora: dict) -> None:
        """Train LoRA adapters instead of the whole backbone (large backbones); the head stays trainable."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora["r"], lora_alpha=lora.get("alpha", lora["r"]),
                            lora_dropout=lora.get("dropout", 0.0), target_modules=lora.get("target_modules"))
        self.backbone = get_peft_model(self.backbone, config)
        self.meta["lora"] = dict(lora)

    def rescale(self, scale: float, shift: float) -> None:
        """Fold ``value -> scale * value + shift`` into the head (un-whitening rewards), so callers
        always read values in reward units."""
        with torch.no_grad():
            self.head.weight.mul_(scale)
            self.head.bias.mul_(scale).add_(shift)

    # --- persistence ------------------------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike, tokenizer=None) -> None:
        """Write the folder atomically: backbone (safetensors), head, ``value_config.json`` and,
        when given, the tokenizer. LoRA adapters are merged into the backbone first (in place:
        values are unchanged, but further training would then update the full backbone)."""
        if hasattr(self.backbone, "merge_and_unload"):
            self.backbone = self.backbone.merge_and_unload()
        with atomic_dir(path) as tmp:
            self.backbone.save_pretrained(tmp)
            save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                      str(tmp / HEAD_FILE))
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            (tmp / CONFIG_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, options: LoadOptions = LoadOptions()) -> "ValueModel":
        path = Path(path)
        if not (path / CONFIG_FILE).exists():
            raise ArtifactError(f"{path} is not a value model folder: {path / CONFIG_FILE} is missing")
        meta = read_json(path / CONFIG_FILE)
        try:
            backbone = _load_backbone(str(path), options).eval()
        except (OSError, SafetensorError) as exc:
            files = [p.name for p in path.glob("*.safetensors") if p.name != HEAD_FILE] or ["model.safetensors"]
            raise ArtifactError(f"cannot load backbone weights {sorted(files)} in {path} "
                                f"(missing or truncated?): {exc}") from exc
        model = cls(backbone, meta["head"], meta)
        try:
            model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        except (OSError, SafetensorError, RuntimeError) as exc:
            raise ArtifactError(f"cannot load value head weights {path / HEAD_FILE} "
                                f"(missing or truncated?): {exc}") from exc
        return model.eval()


def _load_backbone(target: str, options: LoadOptions) -> nn.Module:
    kwargs = {"dtype": torch_dtype(options.dtype, options.device),
              "use_safetensors": None if options.allow_bin_weights else True}
    if options.device_map:
        kwargs["device_map"] = options.device_map
    backbone = AutoModel.from_pretrained(target, trust_remote_code=options.trust_remote_code, **kwargs)
    return backbone if options.device_map else backbone.to(options.device)


def response_values(values: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``q_t``, the value of each taken response token, laid out like ``input_ids`` ([B, T], 0 off-mask).

    Token head ([B, T, V]): ``q_t = Q(s_t, y_t)``, read at the position *before* ``y_t``.
    Scalar head ([B, T]): ``q_t = V(s_{t+1})``, read at the position *of* ``y_t``.
    """
    mask = response_mask.bool()
    if values.dim() == 2:
        return values * mask
    if mask[:, 0].any():
        raise ValueError("a response token at position 0 has no state before it; the token head needs a prompt token")
    q = torch.zeros(input_ids.shape, dtype=values.dtype, device=values.device)
    q[:, 1:] = values[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return q * mask


# --- how the value model reads (prompt, response) pairs -------------------------------------


def encode_prompt(tokenizer, template: str, prompt: str) -> list[int]:
    """Token ids of the templated prompt, encoded like the sample stage does (no added specials)."""
    ids = tokenizer(render_for(tokenizer, template, prompt), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt!r} renders to no tokens with template {template!r}; "
                         "the value of the first response token needs a state before it")
    return ids


@dataclass
class Example:
    ids: list[int]  # templated prompt + response, value-tokenizer ids
    n_response: int
    reward: float = 0.0


def value_examples(prompts, response_ids, rewards, tokenizer, template: str,
                   policy_tokenizer=None) -> list[Example]:
    """One example per (prompt, response); ``response_ids`` are the policy's ids.

    On the policy's vocabulary they are used as they are. Otherwise the response is read as a
    decoder across vocabularies reads it: its text and the templated prompt tokenised as one text,
    the response being what follows their common prefix with the prompt's own tokens, and the value
    tokenizer's EOS appended where the policy emitted EOS (``texts.encode_joint``)."""
    shared = policy_tokenizer is None or same_vocabulary(tokenizer, policy_tokenizer)
    return [_example(prompt, ids, reward, tokenizer, template, policy_tokenizer, shared)
            for prompt, ids, reward in zip(prompts, response_ids, rewards, strict=True)]


def readable_examples(prompts, response_ids, tokenizer, template: str,
                      policy_tokenizer=None) -> tuple[list[int], list[Example]]:
    """The examples (reward 0) of the (partial) responses that read as at least one value-model token,
    and their indices. Across vocabularies a prefix may read as none (a lone space, half a character):
    ``value_examples`` refuses it, a caller that only checks values leaves it out."""
    shared = policy_tokenizer is None or same_vocabulary(tokenizer, policy_tokenizer)
    kept, examples = [], []
    for i, (prompt, ids) in enumerate(zip(prompts, response_ids, strict=True)):
        try:
            examples.append(_example(prompt, ids, 0.0, tokenizer, template, policy_tokenizer, shared))
        except ValueError:
            continue
        kept.append(i)
    return kept, examples


def _example(prompt, ids, reward, tokenizer, template, policy_tokenizer, shared: bool) -> Example:
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError(f"empty response to prompt {prompt!r}: it has no token to value")
    if shared:
        return Example(encode_prompt(tokenizer, template, prompt) + ids, len(ids), float(reward))
    joint, boundary = encode_joint(tokenizer, render_for(tokenizer, template, prompt),
                                   decode(policy_tokenizer, ids), eos=ids[-1] == policy_tokenizer.eos_token_id)
    if boundary == len(joint):
        raise ValueError(f"the response {decode(policy_tokenizer, ids)!r} to prompt {prompt!r} is no text "
                         "in the value model's tokens: it has no token to value")
    return Example(joint, len(joint) - boundary, float(reward))


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every row right-aligned, the mask as long integers."""
    return padding.left_pad(sequences, pad_id, torch.long)


@dataclass
class ValueBatch:
    input_ids: torch.Tensor  # [B, T], left padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] bool: the response tokens (the last n_response of each row)
    rewards: torch.Tensor  # [B]


def collate(examples: list[Example], pad_id: int, device="cpu") -> ValueBatch:
    input_ids, attention_mask = left_pad([e.ids for e in examples], pad_id)
    width = input_ids.shape[1]
    starts = torch.tensor([width - e.n_response for e in examples])
    response_mask = torch.arange(width)[None, :] >= starts[:, None]
    rewards = torch.tensor([e.reward for e in examples], dtype=torch.float32)
    return ValueBatch(input_ids.to(device), attention_mask.to(device), response_mask.to(device), rewards.to(device))


@torch.no_grad()
def predict_last(value_model: ValueModel, examples: list[Example], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """The value of each example's last response token: the terminal value of a full response
    (at EOS when it ended with it), or ``V(s)`` of a cut prefix."""
    was_training = value_model.training
    value_model.eval()
    out = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id, value_model.device)
        q = value_model.taken(batch.input_ids, batch.attention_mask) * batch.response_mask
        out.append(q[:, -1].float().cpu())
    value_model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
