"""One place that turns the config's seed into every random generator's state.

torch is imported where it is used: the jobs that only need ``derive_seed`` (prompts) import no torch.
"""

from __future__ import annotations

import random
import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *names: object) -> int:
    """A stable sub-seed for one named purpose, so stages do not share random streams."""
    key = ":".join([str(seed), *map(str, names)]).encode()
    return zlib.crc32(key) & 0x7FFFFFFF


def seed_everything(seed: int) -> torch.Generator:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
