"""Tiny random models and a word-level tokenizer for unit and exactness tests.

They are built in memory in milliseconds, so tests that check math need no tiny world.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

TOY_WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "good", "bad", "the", "film"]


def make_tokenizer(words: list[str] = TOY_WORDS) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer: ids 0 <pad>, 1 <eos>, then the words in order."""
    vocab = {"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    raw.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>")
    tok.padding_side = "left"
    return tok


def make_gpt2(vocab_size: int, seed: int = 0, n_layer: int = 1, n_embd: int = 16, n_positions: int = 256):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=2, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def make_mistral(vocab_size: int, seed: int = 0, hidden: int = 16, layers: int = 1):
    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                        max_position_embeddings=256, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return MistralForCausalLM(cfg).eval()
