"""Text out of guided tokens (``valueguide.decoding.detokenize``) equals whole decodes, by brute force:
the response text at every step through row copies, and each token's piece appended to a response."""

import random

import pytest

from tests.helpers.toy_models import make_tokenizer
from tests.helpers.toy_tokenizers import WORDS, byte_bpe, real, sentencepiece_bpe
from valueguide.decoding.detokenize import REPLACEMENT, Pieces, ResponseText, text_so_far
from valueguide.texts import decode


def candidate_text(tok, response: list[int], token: int) -> str:
    return text_so_far(tok, response + [token])


def random_ids(tok, rng: random.Random, n: int) -> list[int]:
    """Mostly tokens of real text (whole words, multi-byte characters), some arbitrary ids."""
    text_ids = tok(" ".join(WORDS), add_special_tokens=False).input_ids
    return [rng.choice(text_ids) if rng.random() < 0.7 else rng.randrange(len(tok)) for _ in range(n)]


@pytest.mark.parametrize("make", [byte_bpe, sentencepiece_bpe, make_tokenizer])
def test_response_text_is_the_whole_decode_at_every_step_through_row_copies(make):
    tok, rng = make(), random.Random(0)
    texts, ids = ResponseText(tok, 3), [[], [], []]
    for _ in range(120):
        step = random_ids(tok, rng, 3)
        texts.append(step)
        ids = [row + [t] for row, t in zip(ids, step)]
        if rng.random() < 0.2:
            index = [rng.randrange(3) for _ in range(3)]
            texts.select(index)
            ids = [list(ids[i]) for i in index]
        for i in range(3):
            assert texts.text(i) == text_so_far(tok, ids[i])
            assert texts.text(i, finished=True) == decode(tok, ids[i])
        queries = [(i, t) for i in range(3) for t in random_ids(tok, rng, 2)]
        got = [texts.text(i) + text if extends else text for (i, _), (extends, text) in zip(queries, texts.extended(queries))]
        assert got == [candidate_text(tok, ids[i], t) for i, t in queries]


@pytest.mark.parametrize("make", [byte_bpe, sentencepiece_bpe, real("mistral"), real("gpt2"), make_tokenizer])
def test_a_tokens_piece_is_what_it_appends_to_every_whole_response(make):
    """The fast path of ``ResponseText.extended`` against whole decodes: after responses that end on
    multi-byte characters, byte tokens and spaces, every token with a piece appends exactly it, and
    the general path (window decodes) agrees on every token."""
    tok, rng = make(), random.Random(2)
    pieces, vocab = Pieces(tok), list(range(len(tok)))
    by_token = dict(zip(vocab, pieces.get(vocab)))
    rows = 0
    for _ in range(30):
        ids = random_ids(tok, rng, rng.randrange(1, 6))
        texts = ResponseText(tok, 1, pieces)
        for t in ids:
            texts.append([t])
        u = decode(tok, ids)
        if not u or u.endswith(REPLACEMENT):
            continue
        rows += 1
        for a in rng.sample(vocab, min(len(vocab), 200)):
            if by_token[a] is not None:
                assert decode(tok, ids + [a]) == u + by_token[a]
        queries = [(0, a) for a in rng.sample(vocab, min(len(vocab), 50))]
        assert texts.extended(queries) == texts._decoded(queries)
    with_piece = [t for t, p in by_token.items() if p is not None]
    if make is make_tokenizer:  # a WordPiece decoder: no pieces, every candidate decodes
        assert not with_piece
        return
    assert rows > 10 and len(with_piece) > len(tok) // 4
    assert all(by_token[t] is None for t in tok.all_special_ids)
    bytes_ = [i for t, i in tok.get_vocab().items() if t.startswith("<0x") and t.endswith(">")]
    assert all(by_token[t] is None for t in bytes_)
    spaced = [t for t in with_piece if tok.convert_ids_to_tokens(t)[0] in "▁Ġ"]
    assert spaced and all(by_token[t].startswith(" ") for t in spaced)
