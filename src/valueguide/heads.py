"""Value heads below both of their readers: the value model (``value.model``) and the decoders'
streams and scorers (``decoding``) read a head the same way, and neither imports the other."""

from __future__ import annotations

import torch

HEADS = ("token", "scalar")


def head_at(head, hidden: torch.Tensor, read: torch.Tensor | None) -> torch.Tensor:
    """``head(hidden)`` at the positions ``read`` ([B, T] bool) alone and zeros elsewhere (None: at
    every position): a head over a whole vocabulary is the largest product of a small model's pass,
    and with padded candidate columns most positions are never read."""
    if read is None:
        return head(hidden)
    picked = head(hidden[read])
    out = picked.new_zeros((*read.shape, picked.shape[-1]))
    out[read] = picked
    return out
