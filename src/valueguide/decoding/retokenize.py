"""A text in another model's tokens, kept current by re-tokenising only a short tail.

A model whose tokenizer differs from the guided model's holds its own tokenisation of the text it
reads (its template of the prompt, then the response text). When the text grows, tokenising it again
from the start would cost its whole length at every step. Instead, a window that starts a few tokens
back is tokenised alone and joined to the tokens already held at the first point where the two
agree: a token with the same id ending at the same character, followed in the window by a token
that does not overlap it. Tokens before that point are kept, the window's tokens after it are
taken. A window with no such point widens (x4) until it starts at the first character, where it is
the whole tokenisation.

This is exact for tokenizers whose tokenisation after a point where two tokenisations agree depends
only on the text after it: byte-level BPE (GPT-2: tokens inside pre-tokenizer words), SentencePiece
BPE (pieces inside "▁"-words, byte fallback included), word-level tokenizers. The tests check it
against whole-text tokenisation for each kind, on texts with multi-byte characters.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..texts import common_prefix

MARGIN = 4  # tokens a first window reaches back


class RetokenizeError(ValueError):
    """The tokenizer cannot be used to re-tokenise text incrementally."""


@dataclass(frozen=True)
class Tokens:
    """Token ids of a text with each token's character span (``starts[i]:ends[i]``)."""

    ids: list[int]
    starts: list[int]
    ends: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> "Tokens":
        return Tokens(self.ids[:n], self.starts[:n], self.ends[:n])

    def __add__(self, other: "Tokens") -> "Tokens":
        return Tokens(self.ids + other.ids, self.starts + other.starts, self.ends + other.ends)


class Retokenizer:
    """Tokenises texts with a fast tokenizer (no special tokens added) and keeps them current."""

    def __init__(self, tokenizer, margin: int = MARGIN):
        if not getattr(tokenizer, "is_fast", False):
            raise RetokenizeError(f"guidance across vocabularies needs a fast tokenizer (with character offsets); "
                                  f"{type(tokenizer).__name__} is not one")
        self.backend, self.margin = tokenizer.backend_tokenizer, margin

    def _encode(self, texts: list[str], offsets: list[int]) -> list[Tokens]:
        out = []
        for enc, shift in zip(self.backend.encode_batch(texts, add_special_tokens=False), offsets):
            spans = enc.offsets
            out.append(Tokens(list(enc.ids), [s + shift for s, _ in spans], [e + shift for _, e in spans]))
        return out

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Whole-text tokenisations: the reference that ``update`` and ``branch`` keep to."""
        return self._encode(texts, [0] * len(texts))

    def update(self, old: list[Tokens], texts: list[str]) -> list[Tokens]:
        """The tokenisation of each text, given ``old``, the tokenisation of a prefix of it."""
        return [o.head(j) + tail for o, (j, tail) in zip(old, self._resolve(old, texts))]

    def branch(self, old: list[Tokens], texts: list[str]) -> list[tuple[int, list[int]]]:
        """For each text extending its ``old`` text: ``(p, ids)`` with its tokenisation ``old.ids[:p] + ids``
        and ``p`` as large as possible (the tokens it shares with ``old``)."""
        out = []
        for o, (j, tail) in zip(old, self._resolve(old, texts)):
            p = common_prefix(o.ids, o.ids[:j] + tail.ids, j) if tail.ids else j
            out.append((p, tail.ids[p - j:]))
        return out

    def _resolve(self, old: list[Tokens], texts: list[str]) -> list[tuple[int, Tokens]]:
        """For each text: ``(j, tail)`` with its tokenisation ``old[:j] + tail``."""
        result: list[tuple[int, Tokens] | None] = [None] * len(texts)
        pending, margin = list(range(len(texts))), self.margin
        while pending:
            starts = [self._window_start(old[i], margin) for i in pending]
            chars = [old[i].starts[j0] if j0 else 0 for i, j0 in zip(pending, starts)]
            windows = self._encode([texts[i][c:] for i, c in zip(pending, chars)], chars)
            still = []
            for i, j0, window in zip(pending, starts, windows):
                joined = (0, window) if j0 == 0 else _sync(old[i], j0, window)
                if joined is None:
                    still.append(i)
                else:
                    result[i] = joined
            pending, margin = still, margin * 4
        return result

    @staticmethod
    def _window_start(tokens: Tokens, margin: int) -> int:
        """A token ``margin`` tokens back whose span does not overlap the one before it (or 0)."""
        j0 = max(0, len(tokens) - margin)
        while j0 > 0 and tokens.starts[j0] < tokens.ends[j0 - 1]:
            j0 -= 1
        return j0


def _sync(old: Tokens, j0: int, window: Tokens) -> tuple[int, Tokens] | None:
    """The first point where ``window`` (tokenised from token ``j0``'s start) agrees with ``old``."""
    boundary = {}  # clean token ends of old after j0 -> the number of tokens up to there
    n = len(old)
    for j in range(j0 + 1, n + 1):
        end = old.ends[j - 1]
        if j == n or old.starts[j] >= end:
            boundary[end] = j
    ids, starts, ends = window.ids, window.starts, window.ends
    for k in range(1, len(ids) + 1):
        end = ends[k - 1]
        if k < len(ids) and starts[k] < end:
            continue  # k-1 and k overlap (bytes of one character): not a boundary
        j = boundary.get(end)
        if j is not None and old.ids[j - 1] == ids[k - 1]:
            return j, Tokens(ids[k:], starts[k:], ends[k:])
    return None
