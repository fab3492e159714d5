"""GPT-2's transformer run on the fed positions alone (the small models of guidance across vocabularies).

A text stream feeds every row as wide as its widest: the trunk tokens of each row and, for
token-level guidance, the candidates' branches, padded. Most slots of a pass are padding then, and at
a small model's size the position-wise work (projections, MLP, layer norms, the LM head) grows with
the slots. ``PackedGPT2`` runs that work on the real slots only, packed into one row per model copy,
and spreads them out to the padded layout only for attention (which needs each row's cache). Padding
slots enter the cache as zeros: they are dead columns that no query attends to. Each real slot's
output is what transformers' GPT-2 computes for it: the same operations on the same rows (the tests
compare them).

It serves one GPT-2 or a pair from ``paired.pair_models`` (``copies=2``: the tuned model's rows,
then the untuned model's, as the pair's batch holds them). Any other model, or a GPT-2 configured
beyond what this computes (attention other than sdpa, scaled by layer, with cross-attention), is not
packed: ``packed_gpt2`` returns None and the caller keeps transformers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from .paired import PairedEmbedding, PairedLayerNorm, PairedLinear


def _linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight [copies, in, out], bias [copies, 1, out])`` of a paired linear or a GPT-2 ``Conv1D``."""
    if isinstance(module, PairedLinear):
        return module._w, module._b
    return module.weight[None], module.bias[None, None]


def _layer_norm(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float, tuple]:
    if isinstance(module, PairedLayerNorm):
        return module._w, module._b, module.eps, module.shape
    return module.weight[None, None], module.bias[None, None], module.eps, module.normalized_shape


def _table(module: nn.Module) -> torch.Tensor:
    """An embedding table with the copies' tables one after the other (copy c looks up ``id + c*V``)."""
    return module._table if isinstance(module, PairedEmbedding) else module.weight


def _supported(transformer: nn.Module, copies: int) -> bool:
    config = transformer.config
    if type(transformer).__name__ != "GPT2Model" or config.add_cross_attention:
        return False
    if (config._attn_implementation != "sdpa" or config.scale_attn_by_inverse_layer_idx
            or not config.scale_attn_weights):
        return False
    linear, norm, embedding = ((PairedLinear, PairedLayerNorm, PairedEmbedding) if copies == 2
                               else (Conv1D, nn.LayerNorm, nn.Embedding))
    for module in transformer.modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, (linear, norm, embedding)):
            return False
    return True


class PackedGPT2:
    """``transformer`` (a ``GPT2Model``, paired or not) over the real slots of a padded pass."""

    def __init__(self, transformer: nn.Module, copies: int):
        self.copies = copies
        self.layers = [(_layer_norm(block.ln_1), _linear(block.attn.c_attn), _linear(block.attn.c_proj),
                        _layer_norm(block.ln_2), _linear(block.mlp.c_fc), block.mlp.act,
                        _linear(block.mlp.c_proj), block.attn.head_dim, block.attn.scaling) for block in transformer.h]
        self.final_norm = _layer_norm(transformer.ln_f)
        self.token_table, self.position_table = _table(transformer.wte), _table(transformer.wpe)
        device = self.token_table.device
        step = torch.arange(copies, device=device)[:, None]
        self.token_offset = step * (self.token_table.shape[0] // copies)
        self.position_offset = step * (self.position_table.shape[0] // copies)

    @staticmethod
    def _norm(x, weights):
        w, b, eps, shape = weights
        return torch.addcmul(b, F.layer_norm(x, shape, eps=eps), w)

    @staticmethod
    def _project(x, weights):
        w, b = weights
        return torch.bmm(x, w) if b is None else torch.baddbmm(b, x, w)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache,
                 real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final hidden states of the real slots ``[copies, S, D]`` and their flat index ``[S]``
        into each copy's ``[N * T]`` slots. ``ids``/``positions``/``real``: ``[copies * N, T]``, the
        copies' rows holding the same slots; ``mask``: sdpa's ``[B, 1, T, K]`` bool mask, or the 2D
        mask of cached and new columns (then causal over columns); ``cache``: a ``DynamicCache``."""
        c = self.copies
        rows, width = ids.shape
        n = rows // c
        flat = real[:n].reshape(-1).nonzero().squeeze(1)
        hidden = (F.embedding(ids.view(c, n * width)[:, flat] + self.token_offset, self.token_table)
                  + F.embedding(positions.view(c, n * width)[:, flat] + self.position_offset, self.position_table))
        if mask.dim() == 2:
            past = cache.get_seq_length()
            columns = torch.arange(mask.shape[1], device=mask.device)
            causal = columns[None, :] <= past + torch.arange(width, device=mask.device)[:, None]
            mask = mask[:, None, None, :].bool() & causal
        dim = hidden.shape[-1]
        for layer, (norm_1, attn_in, attn_out, norm_2, mlp_in, act, mlp_out, head_dim, scaling) in enumerate(self.layers):
            qkv = spread(self._project(self._norm(hidden, norm_1), attn_in), flat, rows, width)
            # [rows, width, (q k v), heads, head_dim] -> q, k, v as [rows, heads, width, head_dim]
            q, k, v = qkv.view(rows, width, 3, -1, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            k, v = cache.update(k, v, layer)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
            attended = attended.transpose(1, 2).reshape(c, n * width, dim)[:, flat]
            hidden = hidden + self._project(attended, attn_out)
            inner = act(self._project(self._norm(hidden, norm_2), mlp_in))
            hidden = hidden + self._project(inner, mlp_out)
        return self._norm(hidden, self.final_norm), flat


def packed_gpt2(transformer: nn.Module, copies: int) -> PackedGPT2 | None:
    """A packed runner of ``transformer``, or None where it would not compute what transformers does."""
    return PackedGPT2(transformer, copies) if _supported(transformer, copies) else None


def spread(packed: torch.Tensor, flat: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """Packed outputs ``[copies, S, ...]`` back to the padded layout ``[rows, width, ...]`` (zeros at padding)."""
    copies = packed.shape[0]
    out = packed.new_zeros(copies, rows // copies * width, *packed.shape[2:])
    out[:, flat] = packed
    return out.view(rows, width, *packed.shape[2:])
