"""Stage evaluate: gold reward per (large model, method), or AlpacaEval 2.0 win rates, plus cost.

Submodules: ``reward_task`` (sentiment, summarization), ``alpaca`` (instruction following, through
alpaca_eval's own metric code) and ``judges`` (who decides each pairwise preference). This module
holds only the metrics-table I/O that both stages and the report share; it imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import pandas as pd

from ..artifacts import ArtifactError, atomic_path

API_KEY_VAR = "OPENAI_API_KEY"  # the gpt4_turbo judge's key: read from the environment only, never written
TOKENS_BY_ROLE = "tokens_encoded_"  # metrics columns: tokens processed per model role, summed over prompts


@contextmanager
def keep_root_log_level():
    """Importing alpaca_eval sets the root logger to INFO (annotators/base.py); keep the CLI's level."""
    level = logging.getLogger().level
    try:
        yield
    finally:
        logging.getLogger().setLevel(level)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Metrics tables are CSV so that people can read them; written atomically like every artifact."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_csv(path: str | os.PathLike, required: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a metrics table and check it has the columns the reader depends on."""
    if not os.path.exists(path):
        raise ArtifactError(f"missing artifact: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path} (truncated or not CSV): {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path} lacks columns {missing}; has {list(df.columns)}")
    return df


def split_key(key: str) -> tuple[str, str]:
    """``"model/method"`` -> ``(model, method)``: the keys of the generation paths a stage is given."""
    model, sep, method = key.partition("/")
    if not sep or not model or not method or "/" in method:
        raise ValueError(f"generation key {key!r} is not of the form 'model/method'")
    return model, method
