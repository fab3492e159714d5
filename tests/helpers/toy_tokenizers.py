"""Two small trained tokenizers whose token boundaries often disagree, for guidance across vocabularies.

- ``byte_bpe()``: byte-level BPE like GPT-2's (every byte a symbol, words split by the ByteLevel
  pre-tokenizer; a multi-byte character may span tokens).
- ``sentencepiece_bpe()``: SentencePiece-style BPE like Llama-2's and Mistral's ("▁" marks a space,
  the first word gets one too, the decoder strips it; characters outside a small alphabet fall back
  to byte tokens ``<0xHH>``).

Both are trained in well under a second on ``CORPUS``, sentences with accented letters, a euro sign,
CJK and emoji, so that multi-byte characters and byte fallback occur in ordinary decoding.
"""

from __future__ import annotations

import functools
import json
import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from valueguide import vocabularies

WORDS = ["the", "film", "was", "good", "bad", "great", "acting", "story", "plot", "boring", "wonderful",
         "café", "naïve", "über", "€5", "日本", "映画", "😀", "!", ",", ".", "really", "not", "very", "un",
         "believable", "ending", "scene", "music", "ça", "va", "déjà", "vu", "and", "but", "so", "it"]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


CORPUS = corpus()


def _fast(raw: Tokenizer, **special) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    tok.padding_side = "left"
    return tok


def train_byte_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return _fast(raw, pad_token="<pad>", eos_token="<eos>")


def train_sentencepiece_bpe(texts: list[str], vocab_size: int, alphabet: int) -> PreTrainedTokenizerFast:
    """Trained on the ``alphabet`` most frequent characters; every other character is byte tokens."""
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = metaspace
    trainer_tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], limit_alphabet=alphabet, show_progress=False))
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in sorted(model["vocab"], key=model["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    raw = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=False))
    raw.pre_tokenizer = metaspace
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    raw.add_special_tokens(["<pad>", "<s>", "</s>"])
    return _fast(raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@functools.cache
def byte_bpe() -> PreTrainedTokenizerFast:
    return train_byte_bpe(CORPUS, 300)


@functools.cache
def sentencepiece_bpe() -> PreTrainedTokenizerFast:
    return train_sentencepiece_bpe(CORPUS, 360, alphabet=30)


def real(name: str):
    """A factory of one of the paper's tokenizers (``valueguide.vocabularies``), beside the two toy ones."""
    return lambda: vocabularies.load(name)
