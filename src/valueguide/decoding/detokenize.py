"""The guided model's response as text, kept current one token at a time.

Guidance across vocabularies is defined on text: a model with another tokenizer reads the response
*text* ``u`` that the guided model has written so far. A finished row's ``u`` is ``decode(ids)``
(special tokens skipped, no clean-up of spaces). An unfinished row's ``u`` is the decode of its ids
up to the last point where that decode ended on a whole character: a token that carries part of a
multi-byte character holds the text back until a later token completes it. (Byte-fallback decoders
turn a run of byte tokens that is not valid UTF-8 into replacement characters, characters already
whole included, so the text is taken at such points and not cut back.)

Decoding a whole response at every step costs its length; ``ResponseText`` decodes a short window
instead, as incremental detokenisers do. With a window start ``w < r``, where the decode ended whole
at ``w`` and at ``r``,

    decode(ids[:n]) = decode(ids[:r]) + decode(ids[w:n])[len(decode(ids[w:r])):]

as long as ``decode(ids[w:r])`` is not empty (a decoder that strips a first space strips it from
both window decodes) and the new part holds no replacement character: a run of byte tokens across
``w`` that was valid before ``w`` is invalid as a whole only if its part after ``w`` is, and then the
new part shows it. Such a window is not trusted: the whole response is decoded instead.

Candidates of token-level guidance mostly need no decode at all (``Pieces``): with the decoders of
byte-level BPE and SentencePiece tokenizers, most tokens append the same text after any response
whose decode is whole and not empty.
"""

from __future__ import annotations

import json
import re

from ..texts import decode, decode_batch

REPLACEMENT = "\ufffd"
WINDOW = 4  # tokens a window may span before its start moves up
# decoder steps that decode token by token, apart from the text's start and runs of bytes (``Pieces``)
TOKENWISE = {"ByteLevel", "Replace", "ByteFallback", "Fuse", "Metaspace", "Strip"}
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def text_so_far(tokenizer, ids: list[int]) -> str:
    """The unfinished row's ``u`` by its definition (the module docstring), decoding every prefix:
    the reference that ``ResponseText`` keeps to."""
    for m in range(len(ids), -1, -1):
        text = decode(tokenizer, ids[:m])
        if not text.endswith(REPLACEMENT):
            return text
    return ""


class Pieces:
    """The text each token appends to a response whose decode is whole and not empty, where that
    text does not depend on the response (None where it may).

    The decoder steps in ``TOKENWISE`` work token by token, with two exceptions: the start of the
    text (Metaspace and Strip drop leading spaces, so the text before must not be empty: Strip must
    not cut at its end, hence ``stop == 0``) and bytes (ByteLevel and ByteFallback decode runs of
    bytes together, so the text before must end on a whole character, and the token must decode to
    whole characters and be no byte token). Added tokens may bypass the decoder and have no piece.
    A token's piece is its text after a reference token that has one of its own."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.reference: tuple[int, str] | None = None  # set up on first use: most decoders never ask
        self._pieces: dict[int, str | None] | None = None

    def _setup(self) -> None:
        self._pieces = {}
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None or not _tokenwise(json.loads(backend.to_str()).get("decoder")):
            return
        vocab = backend.get_vocab(with_added_tokens=False)
        self.excluded = set(backend.get_added_tokens_decoder()) | {i for t, i in vocab.items() if BYTE_TOKEN.fullmatch(t)}
        self.reference = self._reference(vocab)

    def _reference(self, vocab: dict[str, int]) -> tuple[int, str] | None:
        """A token with a text of its own (ASCII letters, no leading space) that the others follow."""
        for i in sorted(vocab.values()):
            text = decode(self.tokenizer, [i])
            if i not in self.excluded and text.isalpha() and text.isascii():
                return i, text
        return None

    def get(self, tokens: list[int]) -> list[str | None]:
        """The piece of each token (None: none, or no pieces for this tokenizer)."""
        if self._pieces is None:
            self._setup()
        if self.reference is None:
            return [None] * len(tokens)
        missing = list({t for t in tokens if t not in self._pieces})
        ref, ref_text = self.reference
        for token, text in zip(missing, decode_batch(self.tokenizer, [[ref, t] for t in missing])):
            whole = text.startswith(ref_text) and REPLACEMENT not in text
            self._pieces[token] = text[len(ref_text):] if whole and token not in self.excluded else None
        return [self._pieces[t] for t in tokens]


def _tokenwise(decoder: dict | None) -> bool:
    if decoder is None:
        return False
    if decoder["type"] == "Sequence":
        return all(_tokenwise(step) for step in decoder["decoders"])
    return decoder["type"] in TOKENWISE and decoder.get("stop", 0) == 0


class _Row:
    """One row: its ids, and the window that makes its next text cheap to compute."""

    __slots__ = ("ids", "read", "base", "start", "window", "full", "fresh")

    def __init__(self):
        self.ids: list[int] = []
        self.read = 0  # r: the last point where the decode ended whole ...
        self.base = ""  # ... and that decode: the unfinished row's text
        self.start = 0  # w: decode(ids[w:r]) is whole and, unless w == 0, not empty ...
        self.window = ""  # ... as window
        self.full = ""  # decode(ids): the finished row's text
        self.fresh = True  # read, base and full are up to date with ids

    def copy(self) -> "_Row":
        other = _Row()
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.ids = list(self.ids)
        return other


class ResponseText:
    """Per-row response text of the guided model; rows follow ``select`` like every stream."""

    def __init__(self, tokenizer, n_rows: int, pieces: Pieces | None = None):
        self.tokenizer = tokenizer
        self.rows = [_Row() for _ in range(n_rows)]
        self.pieces = pieces or Pieces(tokenizer)  # one per decoder keeps what it remembers

    def append(self, tokens: list[int | None]) -> None:
        """One more token per row (None: the row is finished and takes none)."""
        for row, token in zip(self.rows, tokens, strict=True):
            if token is not None:
                row.ids.append(token)
                row.fresh = False

    def select(self, index: list[int]) -> None:
        self.rows = [self.rows[i].copy() for i in index]

    def ids(self, i: int) -> list[int]:
        return self.rows[i].ids

    def whole(self, i: int) -> bool:
        """Whether row ``i``'s ``u`` is its whole decode and not empty: then a token with a piece
        (``Pieces``) appends its piece."""
        row = self.rows[i]
        if not row.fresh:
            self._refresh(row)
        return row.read == len(row.ids) and bool(row.base)

    def text(self, i: int, finished: bool = False) -> str:
        """``u`` of row ``i``."""
        row = self.rows[i]
        if not row.fresh:
            self._refresh(row)
        if not finished:
            return row.base
        return row.full if row.read == len(row.ids) else self._decode(row.ids)

    def _decode(self, ids: list[int]) -> str:
        return decode(self.tokenizer, ids)

    def _full(self, row: _Row, tail: str, ids: list[int]) -> tuple[str, bool]:
        """``decode(ids)`` (``ids`` extends the row's ``ids[:read]``) from ``tail``, the decode of
        ``ids[start:]``, and whether the window gave it (else it is a whole decode)."""
        new = tail[len(row.window):]
        if tail.startswith(row.window) and REPLACEMENT not in new.rstrip(REPLACEMENT):
            return row.base + new, True
        return self._decode(ids), False

    def _refresh(self, row: _Row) -> None:
        row.fresh = True
        n = len(row.ids)
        if n == row.read + 1 and row.base and row.window:  # one token after a whole text: its piece, if any
            piece = self.pieces.get(row.ids[-1:])[0]
            if piece is not None:
                row.read, row.base, row.window = n, row.base + piece, row.window + piece
                row.full = row.base
                return
        for m in range(n, row.read, -1):  # the last point where the decode ends whole
            tail = self._decode(row.ids[row.start:m])
            full, windowed = self._full(row, tail, row.ids[:m])
            if m == n:
                row.full = full
            if not full.endswith(REPLACEMENT):
                break
        else:
            return  # nothing new is whole yet: the text stays where it was
        read = row.read
        if not windowed:  # start the window again from the whole response
            row.read, row.base, row.start, row.window = m, full, 0, full
            return
        row.read, row.base, row.window = m, full, tail
        if m - row.start > WINDOW and row.start < read < m:  # move the window's start up
            moved = self._decode(row.ids[read:m])
            if moved and REPLACEMENT not in moved:
                row.start, row.window = read, moved

    def extended(self, queries: list[tuple[int, int]]) -> list[tuple[bool, str]]:
        """``u`` after one more token, for each ``(row, token)``, as ``(True, what it appends to u)``
        or, where it does not extend ``u`` (invalid bytes rewritten), ``(False, the new u)``. The
        rows stay as they are; a token with a piece (``Pieces``) after a row whose ``u`` is its whole
        decode, not empty, appends its piece; the others' window decodes go through one ``decode_batch``."""
        whole = {i for i in {i for i, _ in queries} if self.whole(i)}
        out = [(True, piece) if piece is not None and i in whole else None
               for (i, _), piece in zip(queries, self.pieces.get([token for _, token in queries]))]
        rest = [n for n, result in enumerate(out) if result is None]
        for n, result in zip(rest, self._decoded([queries[n] for n in rest])):
            out[n] = result
        return out

    def _decoded(self, queries: list[tuple[int, int]]) -> list[tuple[bool, str]]:
        """``extended`` by decoding each row's window with the token."""
        windows = {i: self.rows[i].ids[self.rows[i].start:] for i, _ in queries}
        tails = decode_batch(self.tokenizer, [windows[i] + [token] for i, token in queries])
        out = []
        for (i, token), tail in zip(queries, tails):
            row = self.rows[i]
            new = tail[len(row.window):]
            if tail.startswith(row.window) and REPLACEMENT not in new.rstrip(REPLACEMENT):
                out.append((True, "" if new.endswith(REPLACEMENT) else new))
                continue
            full = self._decode(row.ids + [token])
            text = row.base if full.endswith(REPLACEMENT) else full
            out.append((True, text[len(row.base):]) if text.startswith(row.base) else (False, text))
        return out
