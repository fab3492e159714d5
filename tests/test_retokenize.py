"""Re-tokenising text in pieces (``valueguide.decoding.retokenize``) equals tokenising the whole text,
by brute force: a tail re-tokenised after an append, and a guided token looked up as one small token."""

import random

import numpy as np
import pytest

from tests.helpers.toy_tokenizers import WORDS, byte_bpe, sentencepiece_bpe
from valueguide.decoding.detokenize import Pieces
from valueguide.decoding.retokenize import OneTokenAppends, Retokenizer


@pytest.mark.parametrize("make", [byte_bpe, sentencepiece_bpe])
def test_retokenising_a_tail_equals_tokenising_the_whole_text(make):
    tok, rng = make(), random.Random(1)
    retok = Retokenizer(tok)
    pieces = WORDS + [" " + w for w in WORDS] + [" ", "  ", "\n", "é", "€", "本", "😀", "x", "ab", "<s>"]
    for _ in range(40):
        text = "<s>Q: " + "".join(rng.choice(pieces) for _ in range(3))
        tokens = retok.tokenize([text])[0]
        for _ in range(25):
            more = [rng.choice(pieces) for _ in range(3)]
            for appended, (p, tail) in zip(more, retok.branch([tokens] * 3, [text] * 3, more)):
                want = retok.tokenize([text + appended])[0].ids
                assert tokens.ids[:p] + tail == want and (p == len(tokens) or tokens.ids[p] != want[p])
            old, before = tokens, text
            text += "".join(rng.choice(pieces) for _ in range(rng.choice([0, 1, 1, 2])))
            shared, tokens = retok.update([old], [before], [text[len(before):]])[0]
            assert tokens == retok.tokenize([text])[0] and tokens.ids[:shared] == old.ids[:shared]


@pytest.mark.parametrize("guided_make, small_make", [(byte_bpe, sentencepiece_bpe), (sentencepiece_bpe, byte_bpe)])
def test_a_guided_token_looked_up_as_one_small_token_is_what_retokenising_appends(guided_make, small_make):
    """The shortcut of the common case (``OneTokenAppends``) against whole-text tokenisation, for
    every guided token after texts that end in many characters (byte tokens and added ones too),
    looked up for all texts at once and then one by one from what the table holds."""
    guided, small, rng = guided_make(), small_make(), random.Random(3)
    retok = Retokenizer(small)
    table = OneTokenAppends(Pieces(guided), retok.appends)
    pieces = Pieces(guided).get(list(range(len(guided))))
    texts = ["Q: " + " ".join(rng.choice(WORDS) for _ in range(3)) + rng.choice(["", "!", "é", " x", "s", ","])
             for _ in range(30)]
    texts = [t for t in texts if retok.tokenize([t])[0].ids[-1] not in retok.appends.added_ids]
    rows = rng.sample(range(len(guided)), len(guided))  # each text asks the vocabulary in its own order
    asked = np.array([rows[i:] + rows[:i] for i in range(len(texts))])
    at_once = table.after([t[-1] for t in texts], asked)
    found = 0
    for text, tokens_asked, ones in zip(texts, asked, at_once):
        tokens = retok.tokenize([text])[0]
        assert (table.after([text[-1]], tokens_asked[None, :])[0] == ones).all()
        for token, one in zip(tokens_asked.tolist(), ones.tolist()):
            if one >= 0:
                assert retok.tokenize([text + pieces[token]])[0].ids == tokens.ids + [one]
                found += 1
    assert found > 2 * len(guided)  # many answers: a test that never found one would prove nothing

