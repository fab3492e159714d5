"""How token ids become text and text becomes another model's tokens: one rule for every stage.

Guidance across vocabularies passes the response between models as text, so sampling, fitting and
decoding must agree on both directions:

- ``decode``: response ids -> text, special tokens skipped, spaces left as the tokenizer writes them
  (no clean-up, which would rewrite text already passed on);
- ``encode_joint``: a templated prompt and a response text tokenised **as one text**, the response
  being what follows the longest common prefix with the template's own tokens. Tokenising the two
  apart is not the same with SentencePiece tokenizers (the response's first word loses its "▁").
"""

from __future__ import annotations


def decode(tokenizer, ids) -> str:
    """The text of token ids as every stage reads it."""
    return decode_batch(tokenizer, [list(ids)])[0]


def decode_batch(tokenizer, batch: list[list[int]]) -> list[str]:
    """``decode`` of each id list; a fast tokenizer decodes them in one call of its backend, which is
    what its ``decode`` does without clean-up."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(batch, skip_special_tokens=True)
    return [tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) for ids in batch]


def common_prefix(a, b, start: int = 0) -> int:
    """Length of the longest common prefix of ``a`` and ``b``, known to be at least ``start``."""
    n = min(len(a), len(b))
    i = start
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_joint(tokenizer, prompt_text: str, response_text: str, eos: bool = False) -> tuple[list[int], int]:
    """``(ids, boundary)``: ``prompt_text + response_text`` in ``tokenizer``'s ids (EOS appended when
    asked) and where the response starts in them."""
    prompt = tokenizer(prompt_text, add_special_tokens=False).input_ids
    ids = tokenizer(prompt_text + response_text, add_special_tokens=False).input_ids
    if eos:
        ids = ids + [tokenizer.eos_token_id]
    return ids, common_prefix(prompt, ids)
