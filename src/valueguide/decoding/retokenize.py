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

Most appended texts need no tokenizer call at all (``Appends``): where no token of the vocabulary
can straddle the point between the text's last character and the appended text's first (a word
then a space, say), the text's tokens stay as they are and the appended text gets the tokens it has
after that character, which are remembered per (character, appended text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..texts import common_prefix

MARGIN = 1  # tokens a first window reaches back (then 4, 16, ...)
CACHE = 200_000  # window tokenisations remembered (texts repeat: short windows of common words)


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


class Appends:
    """Tokens of text appended at a point that no token of the tokenizer can straddle.

    The point between ``c`` (the text's last character, not whitespace, and not the end of an added
    token: text after one is normalised as a text of its own) and ``d`` (the appended text's first)
    is *hard* when both are ASCII, no added token holds ``c + d``, and either the model is BPE or
    Unigram without word markers and no vocabulary token holds ``c``'s symbol next to ``d``'s (as
    the normalizer and pre-tokenizer write them: "Ġ" or "▁" for a space), or the model is word-based
    (WordPiece, WordLevel) and ``d`` is whitespace. Models tokenise each pre-tokenized word alone and
    no token crosses a hard point; the words before it end there whatever follows (only a whitespace
    ``c`` could be regrouped, by a look-ahead like GPT-2's ``\\s+(?!\\S)``). So the text's tokens
    are kept and the appended text gets the tokens it has after ``c`` at the start of a text (checked:
    those of ``c`` must come first, whole)."""

    def __init__(self, backend):
        self.backend = backend
        model = json.loads(backend.to_str())["model"]
        kind = model["type"]
        markers = model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
        self.by_symbols = kind in ("BPE", "Unigram") and not markers
        self.by_words = kind in ("WordPiece", "WordLevel")
        vocab = backend.get_vocab(with_added_tokens=False)
        self.pairs = {t[i:i + 2] for t in vocab for i in range(len(t) - 1)} if self.by_symbols else set()
        added = backend.get_added_tokens_decoder()
        self.added, self.added_ids = [t.content for t in added.values()], set(added)
        self._hard: dict[str, bool] = {}
        self._tails: dict[str | tuple[str, str], tuple | None] = {}
        self._after: dict[tuple[str, str], tuple | None] = {}

    def _symbols(self, text: str) -> str:
        if self.backend.normalizer is not None:
            text = self.backend.normalizer.normalize_str(text)
        if self.backend.pre_tokenizer is not None:
            text = "".join(piece for piece, _ in self.backend.pre_tokenizer.pre_tokenize_str(text))
        return text

    def hard(self, c: str, d: str) -> bool:
        """Whether the point between ``c`` and ``d`` is hard, the text before not ending in an added token."""
        pair = c + d
        if pair not in self._hard:
            hard = pair.isascii() and not c.isspace() and not any(pair in t for t in self.added)
            if hard and self.by_symbols:
                before = self._symbols("x")
                symbols = [self._symbols("x" + ch)[len(before):] for ch in pair]
                hard = all(len(sym) == 1 for sym in symbols) and "".join(symbols) not in self.pairs
            elif hard:
                hard = self.by_words and d.isspace()
            self._hard[pair] = hard
        return self._hard[pair]

    def after(self, c: str, deltas: list[str]) -> list[tuple[list[int], list[int], list[int]] | None]:
        """For each ``delta`` appended to a text that ends with ``c``, not in an added token: its
        ``tails`` where the point is hard, else None. Remembered per ``(c, delta)``: candidates of
        token-level guidance append the same few texts after the same few characters."""
        memo = self._after
        missing = [d for d in dict.fromkeys(deltas) if (c, d) not in memo]
        if missing:
            if len(memo) + len(missing) > CACHE:
                memo.clear()
            hard = [d for d in missing if d and self.hard(c, d[0])]
            memo.update(((c, d), None) for d in missing)
            memo.update(((c, d), tail) for d, tail in zip(hard, self.tails([(c, d) for d in hard])))
        return [memo[c, d] for d in deltas]

    def tails(self, appended: list[tuple[str, str]]) -> list[tuple[list[int], list[int], list[int]] | None]:
        """For each ``(c, delta)`` at a hard point: ``(ids, starts, ends)`` of ``delta`` after ``c``
        (spans from ``delta``'s start), or None where ``c``'s own tokens do not come first. They are
        remembered per ``(c, delta)``, or per ``delta`` alone when it starts with whitespace: a
        pre-tokenizer starts a new word there whatever ``c`` is (after other characters it may not:
        GPT-2's ``!'s`` is ``!'`` then ``s``). Those not known yet take one tokenizer call."""
        keys = [delta if delta[0].isspace() else (c, delta) for c, delta in appended]
        missing = {}
        for key, (c, delta) in zip(keys, appended):
            if key not in self._tails:
                missing.setdefault(key, (c, delta))
        if missing:
            if len(self._tails) + len(missing) > CACHE:
                self._tails.clear()
            pairs = list(missing.values())
            encodings = self.backend.encode_batch([c + delta for c, delta in pairs] + [c for c, _ in pairs],
                                                  add_special_tokens=False)
            for key, (c, _), both, alone in zip(missing, pairs, encodings, encodings[len(pairs):]):
                m, offsets = len(alone.ids), both.offsets
                fits = both.ids[:m] == alone.ids and (m == len(both.ids) or offsets[m][0] >= len(c))
                self._tails[key] = ((both.ids[m:], [a - len(c) for a, _ in offsets[m:]],
                                     [b - len(c) for _, b in offsets[m:]]) if fits else None)
        return [self._tails[key] for key in keys]


class OneTokenAppends:
    """Which small token each guided token appends after a text that ends in a given character.

    Token-level guidance across vocabularies asks, at every step, what each of a row's k candidate
    tokens does to the row's tokens in the small tokenizer. Mostly it appends one token and changes
    nothing before it: where the guided row's text is whole (a candidate appends its piece,
    ``Pieces``), the small tokens end in no added token and the point between the text's last
    character and the piece is hard (``Appends``), that token depends on the character and the
    candidate alone. It is kept as one table, a row per character and a column per guided token,
    so that the candidates of every row are looked up in one indexing, without a Python step each."""

    UNKNOWN, NONE = -2, -1

    def __init__(self, pieces, appends: Appends):
        self.pieces, self.appends = pieces, appends
        self._row_of: dict[str, int] = {}  # character -> its row of the table
        self._table = np.full((0, 0), self.UNKNOWN, dtype=np.int32)  # a row per character: 4 bytes a token

    def after(self, ends: list[str], tokens: np.ndarray) -> np.ndarray:
        """For each guided token ``tokens[i, j]`` ([n, k] ids): the one small token it appends after a
        text that ends in the character ``ends[i]`` as said above, or -1 (it appends none, or more
        than one, or changes tokens before)."""
        rows = np.array([self._row(end) for end in ends], dtype=np.int64)
        top = int(tokens.max(initial=0)) + 1
        if self._table.shape[1] < top:
            self._grow(self._table.shape[0], max(top, 2 * self._table.shape[1]))
        found = self._table[rows[:, None], tokens]
        unknown = found == self.UNKNOWN
        if unknown.any():
            for i in np.flatnonzero(unknown.any(1)).tolist():
                self._fill(int(rows[i]), ends[i], np.unique(tokens[i][unknown[i]]).tolist())
            found = self._table[rows[:, None], tokens]
        return found

    def _row(self, end: str) -> int:
        row = self._row_of.get(end)
        if row is None:
            row = self._row_of[end] = len(self._row_of)
            if row >= self._table.shape[0]:
                self._grow(max(2 * row, 8), self._table.shape[1])
        return row

    def _grow(self, n_rows: int, n_columns: int) -> None:
        grown = np.full((n_rows, n_columns), self.UNKNOWN, dtype=np.int32)
        grown[:self._table.shape[0], :self._table.shape[1]] = self._table
        self._table = grown

    def _fill(self, row: int, end: str, missing: list[int]) -> None:
        pieces = self.pieces.get(missing)
        tails = self.appends.after(end, [piece or "" for piece in pieces])
        for token, piece, tail in zip(missing, pieces, tails):
            one = piece and tail is not None and len(tail[0]) == 1
            self._table[row, token] = tail[0][0] if one else self.NONE


class Retokenizer:
    """Tokenises texts with a fast tokenizer (no special tokens added) and keeps them current."""

    def __init__(self, tokenizer, margin: int = MARGIN):
        if not getattr(tokenizer, "is_fast", False):
            raise RetokenizeError(f"guidance across vocabularies needs a fast tokenizer (with character offsets); "
                                  f"{type(tokenizer).__name__} is not one")
        self.backend, self.margin = tokenizer.backend_tokenizer, margin
        self.appends = Appends(self.backend)
        self._windows: dict[str, tuple[list[int], list[int], list[int]]] = {}

    def _encode(self, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """``(ids, starts, ends)`` of each text tokenised alone; windows seen before come from memory."""
        windows = self._windows
        missing = list({t for t in texts if t not in windows})
        if len(windows) + len(missing) > CACHE:
            windows.clear()
        for text, enc in zip(missing, self.backend.encode_batch(missing, add_special_tokens=False)):
            offsets = enc.offsets
            windows[text] = (enc.ids, [a for a, _ in offsets], [b for _, b in offsets])
        return [windows[t] for t in texts]

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        """Whole-text tokenisations: the reference that ``update`` and ``branch`` keep to."""
        out = []
        for enc in self.backend.encode_batch(texts, add_special_tokens=False):
            out.append(Tokens(enc.ids, [s for s, _ in enc.offsets], [e for _, e in enc.offsets]))
        return out

    def update(self, old: list[Tokens], old_texts: list[str], appended: list[str]) -> list[tuple[int, Tokens]]:
        """The tokenisation of each ``old_text + appended``, given ``old``, that of ``old_text``:
        ``(j, tokens)``, with a number ``j`` of tokens it shares with ``old`` (not always all of them)."""
        out = []
        for o, (j, c0, (ids, starts, ends), k) in zip(old, self._resolve(old, old_texts, appended)):
            out.append((j, o.head(j) + Tokens(ids[k:], [a + c0 for a in starts[k:]], [b + c0 for b in ends[k:]])))
        return out

    def branch(self, old: list[Tokens], old_texts: list[str], appended: list[str]) -> list[tuple[int, list[int]]]:
        """For each ``old_text + appended`` (``old_text`` tokenised as ``old``): ``(p, ids)`` with its
        tokenisation ``old.ids[:p] + ids`` and ``p`` as large as possible (the tokens it shares with ``old``)."""
        out = []
        for o, (j, _, (ids, _, _), k) in zip(old, self._resolve(old, old_texts, appended)):
            if j == len(o.ids):  # all of old, then the window's tokens: nothing left to compare
                out.append((j, ids[k:]))
                continue
            p = j + common_prefix(o.ids[j:], ids[k:])
            out.append((p, ids[k + p - j:]))
        return out

    def _resolve(self, old: list[Tokens], old_texts: list[str], appended: list[str]) -> list[tuple]:
        """For each text ``old_text + appended``: ``(j, c0, window, k)``: its tokenisation is ``old[:j]``
        then the window's tokens from ``k`` on, the window being the text from character ``c0``
        tokenised alone (after a hard point, ``Appends``: the appended text, after the old text's last
        character)."""
        result: list[tuple | None] = [None] * len(appended)
        for first, end in _runs(old):
            o, before = old[first], old_texts[first]
            if before and o.ids and o.ids[-1] not in self.appends.added_ids:
                j, c0 = len(o.ids), len(before)
                for i, tail in enumerate(self.appends.after(before[-1], appended[first:end]), first):
                    if tail is not None:
                        result[i] = (j, c0, tail, 0)
        pending = [i for i in range(len(appended)) if result[i] is None]
        margin = self.margin
        while pending:
            starts = [self._window_start(old[i], margin) for i in pending]
            chars = [old[i].starts[j0] if j0 else 0 for i, j0 in zip(pending, starts)]
            windows = self._encode([old_texts[i][c:] + appended[i] for i, c in zip(pending, chars)])
            boundaries: dict[tuple[int, int], dict[int, int]] = {}  # shared by texts that extend one old
            still = []
            for i, j0, c0, window in zip(pending, starts, chars, windows):
                if j0 == 0:
                    result[i] = (0, 0, window, 0)
                    continue
                key = (id(old[i]), j0)
                if key not in boundaries:
                    boundaries[key] = _boundaries(old[i], j0, c0)
                joined = _sync(old[i].ids, boundaries[key], window)
                if joined is None:
                    still.append(i)
                else:
                    result[i] = (joined[0], c0, window, joined[1])
            pending, margin = still, margin * 4
        return result

    @staticmethod
    def _window_start(tokens: Tokens, margin: int) -> int:
        """A token ``margin`` tokens back whose span does not overlap the one before it (or 0)."""
        j0 = max(0, len(tokens) - margin)
        starts, ends = tokens.starts, tokens.ends
        while j0 > 0 and starts[j0] < ends[j0 - 1]:
            j0 -= 1
        return j0


def _runs(items: list) -> list[tuple[int, int]]:
    """``(first, end)`` of each run of one object (``is``) in ``items``: the candidates of one row."""
    runs, first = [], 0
    for i in range(1, len(items) + 1):
        if i == len(items) or items[i] is not items[first]:
            runs.append((first, i))
            first = i
    return runs


def _boundaries(old: Tokens, j0: int, c0: int) -> dict[int, int]:
    """Clean token ends of ``old`` after token ``j0``, from character ``c0`` -> the tokens up to there."""
    boundary, n, starts, ends = {}, len(old), old.starts, old.ends
    for j in range(j0 + 1, n + 1):
        end = ends[j - 1]
        if j == n or starts[j] >= end:
            boundary[end - c0] = j
    return boundary


def _sync(old_ids: list[int], boundary: dict[int, int], window: tuple) -> tuple[int, int] | None:
    """The first point where the window agrees with ``old``: ``(j, k)``, the tokens of each before it."""
    ids, starts, ends = window
    n = len(ids)
    for k in range(1, n + 1):
        end = ends[k - 1]
        if k < n and starts[k] < end:
            continue  # k-1 and k overlap (bytes of one character): not a boundary
        j = boundary.get(end)
        if j is not None and old_ids[j - 1] == ids[k - 1]:
            return j, k
    return None
