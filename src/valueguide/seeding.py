"""One place that turns the config's seed into every random generator's state."""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def derive_seed(seed: int, *names: object) -> int:
    """A stable sub-seed for one named purpose, so stages do not share random streams."""
    key = ":".join([str(seed), *map(str, names)]).encode()
    return zlib.crc32(key) & 0x7FFFFFFF


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
