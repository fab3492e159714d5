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
"""

from __future__ import annotations

from ..texts import decode, decode_batch

REPLACEMENT = "\ufffd"
WINDOW = 4  # tokens a window may span before its start moves up


def text_so_far(tokenizer, ids: list[int]) -> str:
    """The unfinished row's ``u`` by its definition (the module docstring), decoding every prefix:
    the reference that ``ResponseText`` keeps to."""
    for m in range(len(ids), -1, -1):
        text = decode(tokenizer, ids[:m])
        if not text.endswith(REPLACEMENT):
            return text
    return ""


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

    def __init__(self, tokenizer, n_rows: int):
        self.tokenizer = tokenizer
        self.rows = [_Row() for _ in range(n_rows)]

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
        rows stay as they are; all window decodes go through one ``decode_batch``."""
        for i in {i for i, _ in queries}:
            if not self.rows[i].fresh:
                self._refresh(self.rows[i])
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
