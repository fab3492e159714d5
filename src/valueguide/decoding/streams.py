"""One model's view of the decoding rows: its own prompt, a KV cache, and lazy feeding.

Every model taking part in decoding (the guided model, the tuned/untuned small pair, the value
model) sees its own rendering of the prompt, followed by the *shared* response tokens. A
``Stream`` encodes each prompt once, copies rows by index (so its cache follows CBS row copies),
and feeds the response lazily: ``sync`` feeds only the positions it has not seen yet, so a token
guide (one token per step) and a chunk scorer (up to L tokens per chunk) share one cache and no
prefix is ever recomputed. ``use_cache=False`` re-encodes the whole sequence at every call: the
naive reference that the tests and the benchmark compare against.
"""

from __future__ import annotations

import inspect
from collections import defaultdict

import torch
from transformers import DynamicCache

from ..padding import left_pad
from .method_spec import MAX_BLOCK

LM, VALUE = "lm", "value"


class Meter:
    """Forward passes and tokens fed, per model role: the cost columns of a generation. Tokens fed to
    score candidate next tokens (token-level guidance) are counted apart, in ``candidates``."""

    def __init__(self):
        self.passes: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.candidates: dict[str, int] = defaultdict(int)

    def add(self, role: str, passes: int, tokens: int, candidates: bool = False) -> None:
        if candidates:
            self.candidates[role] += tokens
        else:
            self.passes[role] += passes
            self.tokens[role] += tokens


def pad_id(tokenizer) -> int:
    """The id that fills padding (gpt2 tokenizers have no pad token: EOS then; it is masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position of each token among the real tokens of its row (pads share their neighbour's)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_args(model) -> tuple[str, bool]:
    """The name of a model's cache argument (transformers 5 renamed ``past_key_values`` to
    ``cache``) and whether its ``forward`` can keep the last positions' logits only (``logits_to_keep``)."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def model_config(model):
    """The transformers config of a causal LM or of a value model's backbone."""
    return model.config if hasattr(model, "config") else model.backbone.config


def candidate_mask(past: torch.Tensor, new: torch.Tensor, k: int, attn_impl: str, dtype) -> torch.Tensor:
    """A 4D attention mask for ``[new tokens, k candidates]`` on top of a cache with mask ``past``.

    New tokens attend causally; each candidate attends to every real token before it and to itself
    only, so k one-token continuations of one prefix are scored in a single pass ("tree" attention).
    Every query attends at least to itself, so no attention row is empty.
    """
    n_rows, n_past = past.shape
    n = new.shape[1]
    q = n + k
    allowed = torch.zeros((n_rows, q, n_past + q), dtype=torch.bool, device=past.device)
    allowed[:, :, :n_past] = past[:, None, :]
    causal = torch.ones((n, n), dtype=torch.bool, device=past.device).tril()
    allowed[:, :n, n_past:n_past + n] = causal & new[:, None, :]
    allowed[:, n:, n_past:n_past + n] = new[:, None, :]
    idx = torch.arange(q, device=past.device)
    allowed[:, idx, n_past + idx] = True
    allowed = allowed[:, None]
    if attn_impl == "sdpa":
        return allowed
    if attn_impl == "eager":
        zero = torch.zeros((), dtype=dtype, device=past.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(f"scoring candidates needs sdpa or eager attention, not {attn_impl!r}")


class Stream:
    """A model fed the shared response rows; ``sync`` feeds at most ``max_block`` positions per pass.

    State per row: ``last`` is the model's output at the last real token (the prediction for the
    next token: logits [N, V], token values [N, V] or a scalar value [N]); with ``track=True``,
    ``taken`` holds, for an LM, the summed log-prob of every response token fed, and for a token
    value head, ``Q(s_T, y_T)`` of the last token fed. It is float64: a running float32 sum of
    log-probs loses about ``|sum| * 6e-8`` at every step, so the difference of two models' sums (the
    implicit score) would drift by ~1e-3 nats over a 2,000-token response.
    """

    max_block = MAX_BLOCK

    def __init__(self, role: str, model, kind: str, meter: Meter, *, use_cache: bool = True,
                 track: bool = False, pad_id: int = 0):
        if kind not in (LM, VALUE):
            raise ValueError(f"unknown stream kind {kind!r}")
        self.role, self.model, self.kind, self.meter = role, model, kind, meter
        self.use_cache, self.track, self.pad_id = use_cache, track, pad_id
        self.config = model_config(model)
        self.device = next(model.parameters()).device
        if kind == LM:
            self._cache_arg, self._can_keep_last = forward_args(model)
        self.fed = 0  # response positions already fed
        self.source = self  # the object whose rows ``Rows.select`` copies

    # --- model call --------------------------------------------------------------------------

    def _forward(self, ids, attention_mask, position_ids, cache, last_only: bool = False) -> torch.Tensor:
        if attention_mask.dim() == 2 and bool(attention_mask.all()):
            attention_mask = None  # no padding anywhere: spare the model building a mask
        kwargs = dict(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=cache is not None)
        if self.kind == VALUE:
            out = self.model(**kwargs, past_key_values=cache).values
        else:
            if last_only and self._can_keep_last:
                kwargs["logits_to_keep"] = 1  # a long prompt's logits would be [N, T, V]
            out = self.model(**kwargs, **{self._cache_arg: cache}).logits
        return out.to(self.device, torch.float32)

    def _new_cache(self):
        return DynamicCache(config=self.config) if self.use_cache else None

    # --- rows --------------------------------------------------------------------------------

    @torch.no_grad()
    def start(self, prompt_ids: list[list[int]], repeats: int) -> None:
        """Encode each prompt once, then copy every prompt's row ``repeats`` times."""
        ids, mask = (t.to(self.device) for t in left_pad(prompt_ids, self.pad_id))
        self.cache = self._new_cache()
        out = self._forward(ids, mask, positions(mask), self.cache, last_only=True)
        self.meter.add(self.role, 1, int(mask.sum()))
        self.hist_ids, self.hist_mask = ids, mask
        self.last = out[:, -1]
        self.taken = torch.zeros(len(prompt_ids), dtype=torch.float64, device=self.device)
        self.fed = 0
        self.select(torch.arange(len(prompt_ids), device=self.device).repeat_interleave(repeats))

    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (with repeats): the cache follows CBS row copies."""
        index = index.to(self.device)
        if self.cache is not None:
            self.cache.reorder_cache(index)
        self.hist_ids, self.hist_mask = self.hist_ids[index], self.hist_mask[index]
        self.last, self.taken = self.last[index], self.taken[index]

    @torch.no_grad()
    def sync(self, ids: torch.Tensor, mask: torch.Tensor, peek: torch.Tensor | None = None):
        """Feed the response positions not fed yet (``ids``/``mask`` are the whole response so far).

        With ``peek`` ([N, k] token ids) also return the outputs for each candidate appended to the
        fed sequence ([N, k, ...]), in the same pass and without keeping the candidates.
        """
        if ids.shape[1] - self.fed > self.max_block:  # bound the [N, T, V] outputs of a long catch-up
            self.sync(ids[:, :self.fed + self.max_block], mask[:, :self.fed + self.max_block])
            return self.sync(ids, mask, peek)
        new, new_mask = ids[:, self.fed:].to(self.device), mask[:, self.fed:].to(self.device)
        if new.shape[1] == 0 and peek is None:
            return None
        full_mask = torch.cat([self.hist_mask, new_mask], 1)
        pos = positions(full_mask)
        if self.use_cache:
            inp, inp_pos, past_mask = new, pos[:, self.hist_mask.shape[1]:], self.hist_mask
        else:
            inp, inp_pos = torch.cat([self.hist_ids, new], 1), pos
            past_mask = full_mask[:, :0]
        n_inp = inp.shape[1]
        if peek is None:
            attn = full_mask
        else:
            k = peek.shape[1]
            peek = peek.to(self.device)
            next_pos = full_mask.sum(1, keepdim=True).expand(-1, k)
            attn = candidate_mask(past_mask, full_mask[:, past_mask.shape[1]:], k,
                                  self.config._attn_implementation, self.model_dtype)
            inp, inp_pos = torch.cat([inp, peek], 1), torch.cat([inp_pos, next_pos], 1)
        out = self._forward(inp, attn, inp_pos, self.cache)
        fed_tokens = int(full_mask.sum()) if not self.use_cache else int(new_mask.sum())
        self.meter.add(self.role, 1, fed_tokens)
        if peek is not None:
            self.meter.add(self.role, 0, peek.numel(), candidates=True)
        if peek is not None and self.cache is not None:
            self.cache.crop(-peek.shape[1])
        self._absorb(new, new_mask, out[:, n_inp - new.shape[1]:n_inp])
        self.hist_ids, self.hist_mask = torch.cat([self.hist_ids, new], 1), full_mask
        self.fed = ids.shape[1]
        return out[:, n_inp:] if peek is not None else None

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _absorb(self, new: torch.Tensor, new_mask: torch.Tensor, out: torch.Tensor) -> None:
        """Update ``last`` and ``taken`` from the outputs at freshly fed positions.

        A row's pads only ever follow its last real token (a finished row stays finished), so the
        output before each real token is the previous column, or ``last`` for the first one. Only
        [N, T] scores are taken out of the [N, T, V] outputs: a catch-up over a whole response (best-of-n
        scores 768 rows of 24 tokens at once) would otherwise copy gigabytes.
        """
        n = new.shape[1]
        if n == 0:
            return
        has = new_mask.any(1)
        last_pos = n - 1 - new_mask.flip(1).long().argmax(1)
        rows = torch.arange(new.shape[0], device=out.device)
        if self.track and self.kind == LM:
            lp = torch.cat([_log_prob_of(self.last[:, None], new[:, :1]), _log_prob_of(out[:, :-1], new[:, 1:])], 1)
            self.taken = self.taken + (lp.double() * new_mask).sum(1)
        elif self.track:  # a token head: the value of the last real token, read from the output before it
            token = new[rows, last_pos]
            q = torch.where(last_pos > 0, out[rows, (last_pos - 1).clamp(min=0), token], self.last[rows, token])
            self.taken = torch.where(has, q.double(), self.taken)
        newest = out[rows, last_pos]
        self.last = newest if bool(has.all()) else torch.where(has.view(-1, *[1] * (out.dim() - 2)), newest, self.last)


def _log_prob_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``tokens`` ([..., V] and [...]), without the [..., V] log-probabilities."""
    return logits.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)


class _SplitMeter:
    """Books one pass of a paired model as one pass of each model, with half of the tokens each."""

    def __init__(self, meter: Meter, roles: tuple[str, str]):
        self.meter, self.roles = meter, roles

    def add(self, role: str, passes: int, tokens: int, candidates: bool = False) -> None:
        for r in self.roles:
            self.meter.add(r, passes, tokens // 2, candidates)


class PairedStream:
    """The tuned and untuned small models fed as one paired model (see ``paired.py``): its rows
    are ``[tuned rows; untuned rows]``, so every row operation is applied to both halves.
    ``half(i)`` is the view a guide or scorer reads as the ``tuned`` (0) or ``untuned`` (1) stream."""

    def __init__(self, roles: tuple[str, str], paired_model, meter: Meter, **stream_options):
        self.inner = Stream("+".join(roles), paired_model, LM, _SplitMeter(meter, roles), **stream_options)
        self.config, self.device, self.source = self.inner.config, self.inner.device, self

    def start(self, prompt_ids: list[list[int]], repeats: int) -> None:
        self.inner.start(prompt_ids + prompt_ids, repeats)

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.device)
        self.inner.select(torch.cat([index, index + self.inner.last.shape[0] // 2]))

    def sync(self, ids: torch.Tensor, mask: torch.Tensor, peek: torch.Tensor | None = None):
        if peek is not None:
            raise ValueError("a paired small model does not score candidates")
        if ids.shape[1] > self.inner.fed:
            self.inner.sync(torch.cat([ids, ids]), torch.cat([mask, mask]))

    def half(self, i: int) -> "_PairHalf":
        return _PairHalf(self, i)


class _PairHalf:
    """One model's rows of a ``PairedStream``."""

    def __init__(self, pair: PairedStream, i: int):
        self.pair, self.i = pair, i
        self.config, self.device, self.source = pair.config, pair.device, pair

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0] // 2
        return t[self.i * n:(self.i + 1) * n]

    def sync(self, ids: torch.Tensor, mask: torch.Tensor, peek: torch.Tensor | None = None):
        return self.pair.sync(ids, mask, peek)

    @property
    def last(self) -> torch.Tensor:
        return self._rows(self.pair.inner.last)

    @property
    def taken(self) -> torch.Tensor:
        return self._rows(self.pair.inner.taken)
