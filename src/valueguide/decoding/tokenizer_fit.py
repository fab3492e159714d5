"""Whether a tokenizer fits the model it is handed to, checked before anything is generated.

A model reads token ids through its embedding matrix. Given another model's tokenizer it either
fails deep inside a forward pass (ids past its embedding) or, worse, runs and reads unrelated tokens
(two vocabularies of one size: Mistral's ids fed to a Llama-2 model). So each model's tokenizer is
refused, by role, when it has more tokens than the model has embedding rows; when the model has
many more rows than the tokenizer has tokens (models pad their embedding by a few hundred rows at
most, for speed); or when the model knows the tokenizer it was saved with and that one has another
vocabulary.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..models import TOKENIZER_FILES, load_tokenizer, same_vocabulary
from .streams import model_config

PADDING = 256  # embedding rows a model may add beyond its tokenizer's tokens (or 1/32 of them, if more)


class VocabularyMismatch(ValueError):
    """A tokenizer does not fit its model, or models that must share one vocabulary do not."""


def saved_folder(model) -> Path | None:
    """The local folder a model (a value model: its backbone) was loaded from, if it holds a tokenizer."""
    path = getattr(model_config(model), "name_or_path", "") or ""
    folder = Path(path) if path else None
    if folder is not None and folder.is_dir() and any((folder / f).exists() for f in TOKENIZER_FILES):
        return folder
    return None


@lru_cache(maxsize=16)
def _load(folder: str):
    return load_tokenizer(folder)


def own_tokenizer(model):
    """The tokenizer saved with ``model`` (in the folder it was loaded from), or None where it knows none."""
    folder = saved_folder(model)
    return _load(str(folder)) if folder is not None else None


def model_name(model) -> str:
    """Where a model was loaded from (a value model: its backbone), else its class."""
    return getattr(model_config(model), "name_or_path", "") or type(model).__name__


def embedding_rows(model) -> int:
    """Rows of the model's input embedding (a value model's: its backbone's)."""
    body = getattr(model, "backbone", model)
    embeddings = body.get_input_embeddings() if hasattr(body, "get_input_embeddings") else None
    return embeddings.num_embeddings if embeddings is not None else model_config(model).vocab_size


def check_fits(role: str, model, tokenizer) -> None:
    """Refuse, naming ``role``, a tokenizer whose vocabulary does not fit ``model`` (module docstring)."""
    rows, tokens = embedding_rows(model), len(tokenizer)
    where = f"the {role} model ({model_name(model)})"
    if tokens > rows:
        raise VocabularyMismatch(f"{where} has {rows} embedding rows but its tokenizer {tokens} tokens: ids from "
                                 f"{rows} on would index past the embedding; pass the tokenizer it was trained with")
    if rows - tokens > max(PADDING, tokens // 32):
        raise VocabularyMismatch(f"{where} has {rows} embedding rows for a tokenizer of {tokens} tokens: it was "
                                 "trained with another tokenizer; pass the one it was trained with")
    own = own_tokenizer(model)
    if own is not None and not same_vocabulary(own, tokenizer):
        raise VocabularyMismatch(f"{where} was saved with a tokenizer ({saved_folder(model)}) whose vocabulary "
                                 "differs from the one given for it; pass that tokenizer")
