"""Generation in shards: contiguous runs of whole batches, merged back into one file.

A shard is cut on batch boundaries and keeps the global index of each of its batches, so every batch
draws from the same seed (``derive_seed(seed, "generate", b)``) and decodes the same rows as in the
unsharded run: the merged shards equal the unsharded output.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..artifacts import ArtifactError, read_parquet, write_parquet


def shard_rows(n_prompts: int, batch_size: int, index: int, count: int) -> tuple[slice, int]:
    """The prompt rows of shard ``index`` of ``count`` and the global index of its first batch."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count} does not exist")
    batches = math.ceil(n_prompts / batch_size)
    if count > batches:
        raise ValueError(f"{count} shards of {batches} batches ({n_prompts} prompts, batch_size {batch_size}) "
                         "would leave shards empty: lower generate.shards")
    first, stop = index * batches // count, (index + 1) * batches // count
    return slice(first * batch_size, min(stop * batch_size, n_prompts)), first


def shard_path(path: str | Path, index: int, count: int) -> Path:
    """``.../{method}.parquet`` -> ``.../{method}.shard{index}of{count}.parquet``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard{index}of{count}{path.suffix}")


def merge_shards(out_path: str | Path, count: int) -> pd.DataFrame:
    """Concatenate the ``count`` shards of ``out_path`` in shard order into ``out_path``.

    A missing or truncated shard stops the merge (``ArtifactError``): the output is all prompts or nothing.
    """
    frames = [read_parquet(shard_path(out_path, i, count), required=["prompt_id"]) for i in range(count)]
    merged = pd.concat(frames, ignore_index=True)
    if merged["prompt_id"].duplicated().any():
        raise ArtifactError(f"the shards of {out_path} repeat prompts")
    write_parquet(merged, out_path)
    return merged
