"""Left padding of token-id rows: what every batched forward pass here starts from."""

from __future__ import annotations

import torch


def left_pad(rows: list[list[int]], pad_id: int, mask_dtype: torch.dtype = torch.bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` with every row right-aligned; ``mask`` marks the real tokens, in ``mask_dtype``
    (decoding keeps a bool mask; value training and its diagnostics a long one, as HF's collators do)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=mask_dtype)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask
