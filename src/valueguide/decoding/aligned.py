"""Models that read the guided rows as text, in their own tokens (guidance across vocabularies).

A ``TextStream`` serves the models that share one tokenizer and one template: the tuned and untuned
small pair (one paired model, or two models) or a value model. Per row it holds the tokenisation of
``template(prompt) + u`` (``u``: the guided response text so far, see ``detokenize``), followed by its
tokenizer's EOS once the guided row has ended with EOS. The response starts at the row's
``boundary``, where that tokenisation stops matching the template's own.

When ``u`` grows, the stream re-tokenises a short tail (``retokenize``), rolls each row back to the
longest prefix it shares with what it holds, and feeds the rest. A roll-back marks the row's cache
columns past that prefix dead instead of moving anything: positions count live columns only, so the
model computes exactly what a fresh pass over the live tokens computes. Dead columns are compacted
away now and then. Each row keeps the model's outputs at its last ``KEEP`` positions, so a roll-back
of fewer tokens than that feeds nothing but the tokens that changed.

A model contributes one number per position ``j``, its *score*:

- a causal LM: ``log p(v_j | v_<j)``; a role's response score is ``R = sum_{j >= boundary} score[j]``,
  summed in float64 (a float32 sum of a long response rounds ``R``, and ``psi = R(u + a) - R(u)``
  with it, to ~1e-3 nats at 1,000+ tokens; in float64 the shared positions cancel exactly);
- a value model: ``Q(v_<j, v_j)`` (token head) or ``V(v_<=j)`` (scalar head); the row's value is the
  score at its last position.

Candidate next tokens of the guided model (token-level guidance) are scored as branches: each
candidate's text is tokenised and rolled back to its common prefix with the row, and the branches of
every row go through each model in one pass with a tree attention mask, then leave the cache.
Rows with the same prompt, response tokens, kept outputs and candidates (CBS copies them) share one
plan. GPT-2 models run on the real slots of a pass alone (``packed``); the bookkeeping around a pass
(live columns, the mask, where scores are read and written) is small integer arrays, worked out in
numpy and made into tensors once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from ..heads import head_at
from ..templates import render_for
from ..texts import common_prefix
from .packed import packed_gpt2, spread
from .retokenize import OneTokenAppends, Retokenizer
from ..padding import left_pad
from .streams import LM, Meter, forward_args, model_config, pad_id

KEEP = 2  # outputs kept per row, for the last positions (a roll-back of one token re-feeds nothing)
COMPACT_AT = 64  # dead cache columns tolerated beyond a half of the longest row
# Causal LMs whose forward is ``lm_head(base_model(...).last_hidden_state)`` and nothing else: their
# head may run on the positions that are read only (see ``Feed._forward``).
PLAIN_HEADS = {"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM",
               "Qwen2ForCausalLM"}


@dataclass
class Trunk:
    """The rows' tokens to feed, left-aligned ([N, W]): row i from own position ``start[i]`` on."""

    ids: torch.Tensor
    start: torch.Tensor
    real: torch.Tensor  # bool: a token, not padding
    keep_first: torch.Tensor  # [N] bool: the first token is re-fed (its score stays as it was)


@dataclass
class Branches:
    """Candidates' tokens to feed, left-aligned ([N, Wb]): token ``step`` of branch ``branch``
    (-1: padding) at own position ``pos``, seeing the row's tokens below ``limit``."""

    ids: torch.Tensor
    pos: torch.Tensor
    branch: torch.Tensor
    step: torch.Tensor
    limit: torch.Tensor


def _longs(values: list) -> torch.Tensor:
    """A 1D long tensor of ints (or bools): through numpy, several times faster than ``torch.tensor``."""
    return torch.from_numpy(np.array(values, dtype=np.int64))


class Ragged:
    """Rows of equally long tuples of ints, gathered one by one and padded into one tensor."""

    def __init__(self, n: int, pad: tuple):
        self.pad = pad
        self.count = [0] * n
        self.rows: list[int] = []
        self.slots: list[int] = []
        self.values: list = []  # the tuples' fields one after the other

    def add(self, row: int, entry: tuple) -> None:
        self.rows.append(row)
        self.slots.append(self.count[row])
        self.count[row] += 1
        self.values.extend(entry)

    def extend(self, row: int, entries: list[tuple]) -> None:
        for entry in entries:
            self.add(row, entry)

    def fields(self, order: np.ndarray, min_width: int = 0) -> list[np.ndarray]:
        """Per field, ``[rows, width]``: row ``order[i]``'s tuples in order, then padding."""
        width = max(max(self.count), min_width)
        out = np.tile(np.array(self.pad, dtype=np.int64), (len(self.count), width, 1))
        if self.rows:
            out[self.rows, self.slots] = np.array(self.values, dtype=np.int64).reshape(len(self.rows), len(self.pad))
        return list(out.transpose(2, 0, 1)[:, order])


class Feed:
    """One model of a ``TextStream``: its cache, which columns are live, the kept outputs and the
    per-position scores. A paired model (``copies=2``) holds the rows of both halves,
    ``[copy 0 rows; copy 1 rows]``, and every row operation applies to both."""

    def __init__(self, model, kind: str, copies: int = 1):
        self.model, self.kind, self.copies = model, kind, copies
        self.config = model_config(model)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.head = "lm" if kind == LM else model.head_kind
        if kind == LM:
            self._cache_arg, self._can_keep_last = forward_args(model)
            self._body = model.base_model if type(model).__name__ in PLAIN_HEADS else None
            if self._body is not None:
                self._head = model.get_output_embeddings()
                self._body_cache_arg = forward_args(self._body)[0]
        # GPT-2 run on the fed slots alone (``packed``), where it computes what transformers does
        transformer = self._body if kind == LM else model.backbone
        self._packed = packed_gpt2(transformer, copies) if transformer is not None else None

    # --- model calls --------------------------------------------------------------------------

    def _here(self, x: np.ndarray) -> torch.Tensor:
        """A numpy array worked out on the CPU as a tensor on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def _tile(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] * self.copies) if self.copies > 1 else x

    def _forward(self, ids, attention_mask, position_ids, keep_last: int | None = None,
                 read: torch.Tensor | None = None) -> torch.Tensor:
        """The model's outputs as scores read them: an LM's log-probabilities, a value model's values.

        ``read`` ([B, T] bool): the only positions whose outputs are read, and the only real ones: a
        packed model runs on those alone and any model's head does (``heads.head_at``); the
        others hold zeros."""
        if read is not None and self._packed is not None:
            hidden, flat = self._packed(ids, attention_mask, position_ids, self.cache, read)
            if self.kind == LM:
                return spread(torch.log_softmax(self._head(hidden).float(), -1), flat, *ids.shape)
            head = self.model.head
            values = spread(head(hidden.to(head.weight)), flat, *ids.shape).float()
            return values.squeeze(-1) if self.head == "scalar" else values
        kwargs = dict(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True)
        if self.kind == LM and read is not None and self._body is not None:
            hidden = self._body(**kwargs, **{self._body_cache_arg: self.cache}).last_hidden_state
            return head_at(lambda h: torch.log_softmax(self._head(h).float(), -1), hidden, read)
        if self.kind == LM:
            if keep_last and self._can_keep_last:
                kwargs["logits_to_keep"] = keep_last
            return torch.log_softmax(self.model(**kwargs, **{self._cache_arg: self.cache}).logits.float(), -1)
        return self.model(**kwargs, past_key_values=self.cache, read=read).values.float()

    def score_of(self, prev: torch.Tensor | None, out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Scores of ``tokens`` ([B, T]) given the outputs before them (``prev``) and at them (``out``):
        outputs as ``_forward`` gives them (an LM's log-probabilities)."""
        if self.head == "scalar":
            return out
        return prev.gather(-1, tokens.clamp(max=prev.shape[-1] - 1)[..., None]).squeeze(-1)

    # --- rows ---------------------------------------------------------------------------------

    @torch.no_grad()
    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Encode the templated prompts (left padded, row space) and keep the last outputs."""
        ids, mask = self._tile(ids.to(self.device)), self._tile(mask.to(self.device))
        self.cache = DynamicCache(config=self.config)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self._forward(ids, mask, pos, keep_last=KEEP)
        if any(getattr(layer, "is_sliding", False) for layer in self.cache.layers):
            raise ValueError(f"{type(self.model).__name__} uses sliding-window attention, whose cache cannot "
                             "follow text re-tokenised across vocabularies")
        out = out[:, -KEEP:]
        if out.shape[1] < KEEP:  # prompts shorter than KEEP: the missing outputs are never read
            out = torch.cat([out[:, :1].expand(-1, KEEP - out.shape[1], *out.shape[2:]), out], 1)
            ids = torch.cat([ids[:, :1].expand(-1, KEEP - ids.shape[1]), ids], 1)
        self.tail, self.live = out, mask.bool().cpu().numpy()
        self.scores = torch.zeros((ids.shape[0], ids.shape[1] + 64), device=self.device)
        # the scores of the last prompt positions (the value of a row with no response yet)
        length = mask.sum(1)
        first = 0 if self.head == "scalar" else 1
        scores = self.score_of(out[:, :-1] if first else None, out[:, first:], ids[:, -KEEP + first:])
        pos = length[:, None] - KEEP + torch.arange(first, KEEP, device=self.device)[None, :]
        rows, cols = (pos >= first).nonzero(as_tuple=True)
        self.scores[rows, pos[rows, cols]] = scores[rows, cols]

    def select(self, index: torch.Tensor) -> None:
        n = self.live.shape[0] // self.copies
        rows = self._tile_rows(index.cpu().numpy(), step=n)
        self.live = self.live[rows]
        index = torch.from_numpy(rows).to(self.device)
        self.cache.reorder_cache(index)
        self.tail, self.scores = self.tail[index], self.scores[index]

    def _tile_rows(self, x: np.ndarray, step: int | None = None) -> np.ndarray:
        """Per-row values of the rows, for every copy's rows (``step``: added per copy, to row indices)."""
        if self.copies == 1:
            return x
        return np.concatenate([x + c * step for c in range(self.copies)] if step else [x] * self.copies)

    def _positions(self) -> np.ndarray:
        """Own position of every cache column (live columns count from 0; dead ones read -1)."""
        return np.where(self.live, self.live.cumsum(1) - 1, -1)

    def _grow_scores(self, length: int) -> None:
        if length >= self.scores.shape[1]:
            extra = torch.zeros((self.scores.shape[0], length - self.scores.shape[1] + 64), device=self.device)
            self.scores = torch.cat([self.scores, extra], 1)

    @torch.no_grad()
    def advance(self, trunk: Trunk, branches: Branches | None, old_len: torch.Tensor,
                new_len: torch.Tensor) -> torch.Tensor | None:
        """Roll rows back and feed ``trunk`` (row i's tokens from own position ``trunk.start[i]`` on);
        with ``branches``, feed the candidates' tokens in the same pass, drop them from the cache and
        return their outputs ([B, Wb, ...]). ``old_len``/``new_len``: the rows' lengths before and after."""
        # which columns are live, the mask and the indices are worked out in numpy (small integer
        # arrays), then each tensor the pass needs is made once
        width = trunk.ids.shape[1]
        t_pos = trunk.start.numpy()[:, None] + np.arange(width)
        at, write = self._absorb_index(trunk, t_pos, old_len.numpy(), new_len.numpy())
        t_ids, start, t_real, t_pos, at, write = map(self._tile_rows, (
            trunk.ids.numpy(), trunk.start.numpy(), trunk.real.numpy(), t_pos, at, write))
        positions = self._positions()  # the roll-back kills the last live columns: the others keep theirs
        self.live = self.live & (positions < start[:, None])
        if branches is None:
            attention, ids, pos, read = np.concatenate([self.live, t_real], 1), t_ids, t_pos, t_real
        else:
            branches = Branches(*(self._tile_rows(x.numpy()) for x in vars(branches).values()))
            attention = self._tree_mask(positions, t_real, t_pos, branches)
            ids, pos = np.concatenate([t_ids, branches.ids], 1), np.concatenate([t_pos, branches.pos], 1)
            read = np.concatenate([t_real, branches.branch >= 0], 1)
        attention = self._here(attention)
        if attention.is_floating_point():  # an additive mask, in the model's dtype
            attention = attention.to(self.dtype)
        out = self._forward(self._here(ids), attention, self._here(pos), read=self._here(read))
        self.live = np.concatenate([self.live, t_real], 1)
        if width:
            self._absorb(out[:, :width], at, t_ids, t_pos, write, int(new_len.max()))
        if branches is None:
            return None
        self.cache.crop(-branches.ids.shape[1])
        return out[:, width:]

    def scores_at(self, branch_out: torch.Tensor | None, source: np.ndarray, tokens: np.ndarray) -> torch.Tensor:
        """Scores of ``tokens`` ([N, S], row space) read at outputs ``source``: an index into the kept
        outputs (``0..KEEP-1``, oldest first) followed by ``branch_out``. For an LM or a token head
        the source is the output *before* the token, for a scalar head the token's own ([B, S]).
        Each part is read where it lies (joining them would copy every output), by flat indices
        worked out in numpy."""
        source, tokens = self._tile_rows(source), self._tile_rows(tokens)
        rows = np.arange(source.shape[0])[:, None]
        here = self._here
        scalar = self.head == "scalar"
        token = None if scalar else here(np.minimum(tokens, self.tail.shape[-1] - 1))

        def read(outputs: torch.Tensor, at: np.ndarray) -> torch.Tensor:
            flat = outputs.flatten(0, 1)
            at = here(rows * outputs.shape[1] + at)
            return flat[at] if scalar else flat[at, token]

        kept = read(self.tail, np.minimum(source, KEEP - 1))
        if branch_out is None:
            return kept
        return torch.where(here(source < KEEP), kept, read(branch_out, np.maximum(source - KEEP, 0)))

    def _absorb_index(self, trunk: Trunk, pos: np.ndarray, old_len: np.ndarray,
                      new_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What ``_absorb`` reads and writes after feeding ``trunk`` at own positions ``pos``:
        ``at``, for each trunk token the output its score is read at (its own for a scalar head, else
        the one before), then the KEEP outputs to keep, as an index into the kept outputs (own
        positions ``old_len - KEEP`` on) followed by the pass's trunk outputs (``start`` on); and
        ``write``, the positions whose scores are written (a re-fed first token keeps the score it
        had; position 0 has none and stays 0). Worked out in numpy, before the rows are tiled."""
        start, old_len, new_len = trunk.start.numpy()[:, None], old_len[:, None], new_len[:, None]
        scalar = self.head == "scalar"
        wanted = np.concatenate([pos if scalar else pos - 1, new_len - KEEP + np.arange(KEEP)], 1)
        at = np.where(wanted >= start, wanted - start + KEEP, wanted - old_len + KEEP)
        write = trunk.real.numpy().copy()
        if not scalar and pos.shape[1]:
            write[:, 0] &= ~trunk.keep_first.numpy()
        return at.clip(0, KEEP + pos.shape[1] - 1), write  # where nothing is there the value is never used

    def _absorb(self, out: torch.Tensor, at: np.ndarray, ids: np.ndarray, pos: np.ndarray, write: np.ndarray,
                length: int) -> None:
        """After a pass: the scores of the fed trunk positions (``write``) and the kept outputs, read
        at ``at`` (``_absorb_index``) off the kept outputs and ``out`` joined, by flat indices worked
        out in numpy; ``length``: the longest row now."""
        rows, width = ids.shape
        flat = at + np.arange(rows)[:, None] * (KEEP + width)  # into the joined outputs' rows
        seen = torch.cat([self.tail, out], 1).flatten(0, 1)
        here = self._here
        self.tail = seen.index_select(0, here(flat[:, width:].reshape(-1))).view(rows, KEEP, *out.shape[2:])
        r, c = write.nonzero()
        source = here(flat[r, c])
        scores = seen[source] if self.head == "scalar" else seen[source, here(np.minimum(ids[r, c], out.shape[-1] - 1))]
        self._grow_scores(length)
        self.scores[here(r), here(pos[r, c])] = scores

    def _tree_mask(self, positions: np.ndarray, t_real, t_pos, branches: Branches) -> np.ndarray:
        """Who attends to whom in a pass of trunk tokens then branch tokens (4D, [B, 1, Q, K]), as
        the model's attention takes it: bool for sdpa, additive for eager (numpy arrays in, as
        ``advance`` holds them).

        Trunk tokens see the live columns before them; a branch token sees the live and trunk columns
        before its branch point and the earlier tokens of its own branch; every query sees itself.
        ``positions``: the cache columns' own positions (``_positions``), read where they are live."""
        never = np.iinfo(np.int64).max
        key_pos = np.concatenate([np.where(self.live, positions, never), np.where(t_real, t_pos, never)], 1)
        q_limit = np.concatenate([np.where(t_real, t_pos + 1, -1), branches.limit], 1)  # trunk keys below this
        allowed_trunk = key_pos[:, None, :] < q_limit[:, :, None]  # [B, Q, K0]
        q_branch = np.concatenate([np.full_like(t_pos, -1), branches.branch], 1)  # -1: not a branch token
        q_step = np.concatenate([np.zeros_like(t_pos), branches.step], 1)
        allowed_branch = ((branches.branch[:, None, :] == q_branch[:, :, None]) & (q_branch[:, :, None] >= 0)
                          & (branches.step[:, None, :] <= q_step[:, :, None]))  # [B, Q, Wb]
        allowed = np.concatenate([allowed_trunk, allowed_branch], 2)
        q = allowed.shape[1]
        k0 = key_pos.shape[1] - t_pos.shape[1]
        allowed[:, np.arange(q), k0 + np.arange(q)] = True
        allowed = allowed[:, None]
        attn = self.config._attn_implementation
        if attn == "sdpa":
            return allowed
        if attn == "eager":
            return np.where(allowed, 0.0, torch.finfo(self.dtype).min).astype(np.float32)
        raise ValueError(f"scoring candidate tokens across vocabularies needs sdpa or eager attention, not {attn!r}")

    def compact(self) -> None:
        """Drop dead cache columns when they are many: each row's live columns move to the right end."""
        count = self.live.sum(1)
        width = int(count.max())
        if self.live.shape[1] - width <= max(COMPACT_AT, width // 2):
            return
        order = np.argsort(~self.live, axis=1, kind="stable")  # live columns first, in order
        shift = width - count
        col = np.arange(width)
        index = torch.from_numpy(np.take_along_axis(order, (col[None, :] - shift[:, None]).clip(min=0), 1))
        index = index.to(self.device)
        for layer in self.cache.layers:
            idx = index[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
            layer.keys, layer.values = layer.keys.gather(2, idx), layer.values.gather(2, idx)
        self.live = col[None, :] >= shift[:, None]


ROW_STATE = ("prompt_text", "text", "tokens", "template_ids", "eos", "boundary", "tail_n", "seen")


class TextStream:
    """The rows as text, in the tokens of models that share one tokenizer and template.

    ``roles`` maps each role it serves to ``(feed, copy)``: the paired small model serves ``tuned``
    (copy 0) and ``untuned`` (copy 1) from one feed; a value model one role from its own."""

    def __init__(self, roles: dict[str, tuple[Feed, int]], tokenizer, template: str, meter: Meter,
                 retokenizer: Retokenizer, one_token_appends: OneTokenAppends):
        if tokenizer.eos_token_id is None:
            raise ValueError("a model read across vocabularies needs a tokenizer with an EOS token")
        self.roles, self.tokenizer, self.template, self.meter = roles, tokenizer, template, meter
        self.feeds = list({id(feed): feed for feed, _ in roles.values()}.values())
        # one of each per decoder keeps what they remember across calls
        self.retokenizer, self.one_token_appends = retokenizer, one_token_appends
        self.eos_id = tokenizer.eos_token_id
        self.source = self  # what ``Rows.select`` copies, once for all roles

    def _book(self, feed: Feed, tokens: int, candidates: bool = False) -> None:
        for role, (f, _) in self.roles.items():
            if f is feed:
                self.meter.add(role, 1, tokens, candidates=candidates)

    # --- rows ---------------------------------------------------------------------------------

    def start(self, prompts: list[str], repeats: int) -> None:
        texts = [render_for(self.tokenizer, self.template, p) for p in prompts]
        tokens = self.retokenizer.tokenize(texts)
        for prompt, tok in zip(prompts, tokens):
            if not tok.ids:
                raise ValueError(f"prompt {prompt!r} renders to no tokens through template {self.template!r}")
        ids, mask = left_pad([t.ids for t in tokens], pad_id(self.tokenizer))
        for feed in self.feeds:
            feed.start(ids, mask)
            self._book(feed, int(mask.sum()))
        self.prompt_text, self.text, self.tokens = texts, list(texts), tokens
        self.template_ids = [t.ids for t in tokens]
        self.eos = [False] * len(prompts)
        self.boundary = [len(t) for t in tokens]
        self.tail_n = [min(KEEP, len(t)) for t in tokens]
        self.seen = [0] * len(prompts)
        self.select(torch.arange(len(prompts)).repeat_interleave(repeats))

    def select(self, index: torch.Tensor) -> None:
        rows = index.tolist()
        for name in ROW_STATE:
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in rows])
        for feed in self.feeds:
            feed.select(index)

    def own(self, i: int) -> list[int]:
        """Row ``i`` in this stream's tokens: the text's tokens, then EOS when the row ended with EOS."""
        return self.tokens[i].ids + [self.eos_id] if self.eos[i] else self.tokens[i].ids

    # --- keeping up with the guided rows -------------------------------------------------------

    def _plan(self, rows) -> tuple[Trunk, dict]:
        """What feeding the rows' new text takes, and the row state after it."""
        n = len(self.text)
        ended = rows.ended_eos.tolist()
        finished = rows.finished.tolist()
        changed = [i for i in range(n) if self.seen[i] != rows.length(i) or self.eos[i] != ended[i]]
        texts = {i: self.prompt_text[i] + rows.response_text(i, finished[i]) for i in changed}
        grow = [i for i in changed if texts[i] != self.text[i] and texts[i].startswith(self.text[i])]
        fresh = [i for i in changed if texts[i] != self.text[i] and not texts[i].startswith(self.text[i])]
        tokens = dict(zip(grow, self.retokenizer.update([self.tokens[i] for i in grow], [self.text[i] for i in grow],
                                                        [texts[i][len(self.text[i]):] for i in grow])))
        tokens.update((i, (0, t)) for i, t in zip(fresh, self.retokenizer.tokenize([texts[i] for i in fresh])))
        state = {name: list(getattr(self, name)) for name in ("text", "tokens", "eos", "boundary", "tail_n", "seen")}
        starts, feeds, keep_first = [], [], []
        for i in range(n):
            old = self.own(i)
            if i not in texts:
                starts.append(len(old)), feeds.append([]), keep_first.append(False)
                continue
            shared, new_tokens = tokens.get(i, (len(self.tokens[i]), self.tokens[i]))
            state["text"][i], state["seen"][i], state["eos"][i] = texts[i], rows.length(i), ended[i]
            state["tokens"][i] = new_tokens
            new = new_tokens.ids + [self.eos_id] if ended[i] else new_tokens.ids
            p = common_prefix(old, new, min(shared, len(old)))
            start, refeed = self._branch_point(p, len(old), self.tail_n[i])
            starts.append(start), feeds.append(new[start:]), keep_first.append(refeed)
            state["tail_n"][i] = min(KEEP, max(0, start - len(old) + self.tail_n[i]) + len(new) - start)
            state["boundary"][i] = common_prefix(self.template_ids[i], new, min(self.boundary[i], p))
        return self._trunk(starts, feeds, keep_first), state

    @staticmethod
    def _branch_point(p: int, length: int, tail_n: int) -> tuple[int, bool]:
        """Where feeding starts for tokens that differ from position ``p`` on: at ``p`` when the output
        at ``p - 1`` is kept; else one earlier, re-feeding a token whose score is known. (At 0 there is
        no output before: position 0 scores 0 with an LM or a token head.)"""
        if p >= 1 and p - 1 >= length - tail_n:
            return p, False
        return max(p - 1, 0), True

    @staticmethod
    def _trunk(starts: list[int], feeds: list[list[int]], keep_first: list[bool]) -> Trunk:
        width = max(len(f) for f in feeds)
        ids = _longs([t for f in feeds for t in f + [0] * (width - len(f))]).view(len(feeds), width)
        real = torch.arange(width)[None, :] < _longs([len(f) for f in feeds])[:, None]
        return Trunk(ids, _longs(starts), real, _longs(keep_first).bool())

    def _commit(self, state: dict) -> None:
        for name, values in state.items():
            setattr(self, name, values)

    def _lengths(self, state: dict | None = None) -> torch.Tensor:
        tokens, eos = (state["tokens"], state["eos"]) if state else (self.tokens, self.eos)
        return _longs([len(t) + e for t, e in zip(tokens, eos)])

    def sync(self, rows) -> None:
        """Feed every row's text that the models have not read yet."""
        trunk, state = self._plan(rows)
        if trunk.real.any():
            old_len, new_len = self._lengths(), self._lengths(state)
            for feed in self.feeds:
                feed.advance(trunk, None, old_len, new_len)
                feed.compact()
                self._book(feed, int(trunk.real.sum()))
        self._commit(state)

    # --- what the guides and scorers read ---------------------------------------------------------

    def response_scores(self, rows) -> dict[str, torch.Tensor]:
        """Per role and row: ``R`` over the response (an LM), or the value at the last token."""
        self.sync(rows)
        return self._current()

    def _current(self) -> dict[str, torch.Tensor]:
        length = self._lengths()
        out = {}
        for role, (feed, copy) in self.roles.items():
            scores = feed.scores.view(feed.copies, len(self.text), -1)[copy].cpu()
            if feed.head == "lm":
                j = torch.arange(scores.shape[1])[None, :]
                inside = (j >= _longs(self.boundary)[:, None]) & (j < length[:, None])
                out[role] = (scores.double() * inside).sum(1)
            else:
                out[role] = scores.gather(1, (length - 1)[:, None]).squeeze(1)
        return out


    def candidate_scores(self, rows, candidates: torch.Tensor,
                         guided_eos: int | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per role, the score of each row with each candidate token of the guided model appended
        ([N, k]): ``R`` (an LM) or the value at the last token (a value model); and, as
        ``response_scores`` gives them, the rows' scores now ([N]). A candidate whose text adds
        nothing whole scores as the row does; the guided EOS appends this tokenizer's EOS to the
        row's full decode (``_eos_branch``). Finished rows' candidates score 0. One pass per model,
        with the rows' own new text.

        A candidate's tokens are scored from the outputs before them, so an LM or a token head
        feeds none of a one-token candidate (the row's kept outputs hold what it needs) and only
        the tokens before the last of a longer one."""
        trunk, state = self._plan(rows)
        plan = self._candidates(rows, candidates, guided_eos, state)
        old_len, new_len = self._lengths(), self._lengths(state)
        columns = plan["columns"]
        scores = {}
        for feed in self.feeds:
            if columns is None and not trunk.real.any():
                out = None
            else:
                out = feed.advance(trunk, columns, old_len, new_len)
                self._book(feed, int(trunk.real.sum()))
                if columns is not None:
                    self._book(feed, int((columns.branch >= 0).sum()), candidates=True)
            scores[id(feed)] = feed.scores_at(out, plan["source"], plan["token"])
            feed.compact()
        self._commit(state)
        scores = {id(feed): self._candidate_values(feed, scores[id(feed)], plan) for feed in self.feeds}
        return ({role: scores[id(feed)][0][copy] for role, (feed, copy) in self.roles.items()},
                {role: scores[id(feed)][1][copy] for role, (feed, copy) in self.roles.items()})

    def _candidates(self, rows, candidates: torch.Tensor, guided_eos: int | None, state: dict) -> dict:
        """Each candidate as ``(p, ids)``, its tokens after the ``p`` it shares with the row, and what
        scoring them takes (``_score_plan``). Those that append one token after the row's are looked
        up (``OneTokenAppends``) and read off the row's last kept output; the rest are re-tokenised."""
        n, k = candidates.shape
        finished = rows.finished.tolist()
        reads = self._reads_one(state)
        one = self._one_token_candidates(rows, candidates.numpy(force=True), guided_eos, finished, reads, state)
        cand, ones = candidates.tolist(), one.tolist()
        twin = self._twins(rows, cand, finished, state)
        planned = [i for i in range(n) if twin[i] == i and not finished[i]]
        queries = [(i, a) for i in planned for a, o in zip(cand[i], ones[i]) if o < 0 and a != guided_eos]
        extended = iter(rows.extended_texts(queries))
        branch_of, rewritten = {}, []
        at, old, old_text, appended = [], [], [], []  # the candidates to branch off their rows
        for i in planned:
            tokens, text_i = state["tokens"][i], state["text"][i]
            for j, (a, o) in enumerate(zip(cand[i], ones[i])):
                if o >= 0:
                    continue
                if a == guided_eos:
                    branch_of[i, j] = self._eos_branch(rows, i, state)
                    continue
                extends, text = next(extended)
                if not extends:
                    rewritten.append((i, j, text))
                elif text:
                    at.append((i, j)), old.append(tokens), old_text.append(text_i), appended.append(text)
                else:
                    branch_of[i, j] = (len(tokens.ids), [])
        for (i, j), (p, ids) in zip(at, self.retokenizer.branch(old, old_text, appended)):
            if len(ids) == 1 and reads[i] and p == len(state["tokens"][i].ids):
                one[i, j] = ids[0]
            else:
                branch_of[i, j] = (p, ids)
        for (i, j, _), tokens in zip(rewritten, self.retokenizer.tokenize(
                [self.prompt_text[i] + text for i, _, text in rewritten])):
            p = common_prefix(state["tokens"][i].ids, tokens.ids)
            branch_of[i, j] = (p, tokens.ids[p:])
        return self._score_plan(n, k, branch_of, one[twin], state, twin)

    def _eos_branch(self, rows, i: int, state: dict) -> tuple[int, list[int]]:
        """The guided EOS as a candidate of row ``i``: this tokenizer's EOS after the text the row is
        output with once it ends (``Rows.text``, its full decode), which is also what the row is scored
        on once EOS is drawn. Where ``u`` holds back a partial character, that text goes on past ``u``
        (with a replacement character)."""
        tokens, text = state["tokens"][i], state["text"][i]
        full = self.prompt_text[i] + rows.response_text(i, finished=True)
        if full == text:
            return len(tokens.ids), [self.eos_id]
        if full.startswith(text):
            p, ids = self.retokenizer.branch([tokens], [text], [full[len(text):]])[0]
        else:
            ids = self.retokenizer.tokenize([full])[0].ids
            p = common_prefix(tokens.ids, ids)
            ids = ids[p:]
        return p, ids + [self.eos_id]

    def _twins(self, rows, candidates: list[list[int]], finished: list[bool], state: dict) -> list[int]:
        """For each row, the first row whose candidates are planned the same: the same prompt,
        response tokens, candidates and kept outputs. CBS copies rows, and copies often draw the same
        token, so at a step many rows take another's plan."""
        first: dict[tuple, int] = {}
        return [first.setdefault((self.prompt_text[i], tuple(rows.token_ids(i)), finished[i], state["tail_n"][i],
                                  tuple(candidates[i])), i) for i in range(len(candidates))]

    def _one_token_candidates(self, rows, candidates: np.ndarray, guided_eos: int | None, finished: list[bool],
                              reads: list[bool], state: dict) -> np.ndarray:
        """[n, k]: the one token each candidate appends after all of its row's, where the lookup
        knows it and the row reads it (``reads``, see ``_reads_one``); -1 elsewhere (the guided EOS
        appends this tokenizer's EOS, see ``_candidates``)."""
        one = np.full(candidates.shape, OneTokenAppends.NONE, dtype=np.int64)
        added = self.retokenizer.appends.added_ids
        looked_up = [i for i, (tokens, read) in enumerate(zip(state["tokens"], reads))
                     if not finished[i] and read and tokens.ids[-1] not in added and rows.whole_text(i)]
        if looked_up:
            one[looked_up] = self.one_token_appends.after([state["text"][i][-1] for i in looked_up],
                                                          candidates[looked_up])
        if guided_eos is not None:
            one[candidates == guided_eos] = OneTokenAppends.NONE
        return one

    def _reads_one(self, state: dict) -> list[bool]:
        """Per row: whether a candidate that appends one token after the row's is read off the row's
        last kept output: with a model that scores a token from the output before it, once the
        response has begun in this tokenizer (the sum then runs from the row's boundary)."""
        if self.feeds[0].head == "scalar":
            return [False] * len(state["tokens"])
        return [b < len(t.ids) for b, t in zip(state["boundary"], state["tokens"])]

    def _score_plan(self, n: int, k: int, branch_of: dict, one: np.ndarray, state: dict, twin: list[int]) -> dict:
        """The columns to feed and, per scored token, where its score is read (``source``: a kept
        output, or a column) and which candidate it counts for. An LM sums ``[lo, hi)`` of the row's
        scores and the candidate's included tokens; a value model reads the candidate's last scored
        token (``last``: its index among the scored, -1: the row's own value). ``one`` ([n, k], -1
        elsewhere): candidates that append one token after the row's response, read at the row's last
        kept output (an LM sums ``[boundary, length)`` and that token's score). ``branch_of`` holds the
        candidates of the rows that are their own ``twin`` (``_twins``); the others copy their twin's."""
        scalar = self.feeds[0].head == "scalar"
        lm = self.feeds[0].head == "lm"
        cols = Ragged(n, (0, 0, -1, 0, -1))  # (id, pos, branch, step, limit)
        scored = Ragged(n, (0, 0, -1, 0))  # (source, token, candidate, include)
        lo, hi, last, at_zero = [0] * (n * k), [0] * (n * k), [-1] * (n * k), [False] * (n * k)
        lengths, boundary, count = [len(t.ids) for t in state["tokens"]], state["boundary"], scored.count
        for (i, j), (p, ids) in branch_of.items():
            c, length, b = i * k + j, lengths[i], boundary[i]
            if not ids:  # nothing new: the row as it is
                lo[c], hi[c] = b, length
                continue
            b_new = b if b < p else p + common_prefix(self.template_ids[i][p:], ids)
            lo[c], hi[c] = min(b_new, p), p
            if p == length and len(ids) == 1 and p >= 1 and not scalar:  # appends one token: read, not fed
                scored.add(i, (KEEP - 1, ids[0], j, p >= b_new))
                last[c] = count[i] - 1
                continue
            elif scalar:  # a token's own output
                first = cols.count[i]
                cols.extend(i, [(t, p + s, j, s, p) for s, t in enumerate(ids)])
                scored.extend(i, [(KEEP + first + s, t, j, p + s >= b_new) for s, t in enumerate(ids)])
            else:  # the output before each token
                kept = p >= 1 and p - 1 >= length - state["tail_n"][i]
                if kept or p == 0:
                    fed, at = ids[:-1], p
                    first_source = KEEP - length + p - 1 if p >= 1 else 0
                else:  # re-feed the token before the branch: its output is not kept
                    fed, at = [state["tokens"][i].ids[p - 1]] + ids[:-1], p - 1
                    first_source = KEEP + cols.count[i]
                shift = cols.count[i] - (at == p)
                cols.extend(i, [(t, at + s, j, s, at) for s, t in enumerate(fed)])
                scored.extend(i, [(first_source if s == 0 else KEEP + shift + s, t, j, p + s >= b_new and p + s > 0)
                                  for s, t in enumerate(ids)])
            last[c] = count[i] - 1
            at_zero[c] = p + len(ids) == 1 and not scalar
        # the rest in numpy (a few microseconds an operation less than torch on these small arrays)
        twin = np.array(twin)
        columns = Branches(*map(torch.from_numpy, cols.fields(twin))) if max(cols.count) else None
        source, token, candidate, include = scored.fields(twin, min_width=1)
        reads = one >= 0
        active = reads.any(1)
        active[list({i for i, _ in branch_of})] = True
        grid = lambda values: np.array(values, dtype=np.int64).reshape(n, k)[twin]  # noqa: E731
        length = self._lengths(state).numpy()[:, None]  # EOS too
        lo = np.where(reads, np.array(boundary)[:, None], grid(lo))
        hi = np.where(reads, np.array(lengths)[:, None], grid(hi))
        last = grid(last)
        plan = {"source": np.concatenate([source, np.full_like(one, KEEP - 1)], 1),  # then the one-token reads
                "token": np.concatenate([token, np.maximum(one, 0)], 1), "candidate": np.maximum(candidate, 0),
                "include": (include != 0) & (candidate >= 0) & lm, "reads": reads,
                # an LM's sums: the row's [boundary, length), then each candidate's [lo, hi)
                "ends": np.concatenate([length, np.array(boundary)[:, None], hi, lo], 1),
                "row_last": np.maximum(length - 1, 0), "last": np.maximum(last, 0), "has_last": last >= 0,
                "at_zero": grid(at_zero) != 0, "active": active[twin]}
        kept_numpy = {name: plan.pop(name) for name in ("source", "token")}  # Feed.scores_at reads numpy
        return {"columns": columns, **kept_numpy, **{name: torch.from_numpy(value) for name, value in plan.items()}}

    def _candidate_values(self, feed: Feed, read: torch.Tensor, plan: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per copy of the feed's model, the score with each candidate ([copies, N, k]) and, as
        ``_current`` gives it, now ([copies, N]), from the same sums: a candidate that adds nothing
        scores exactly as the row does. ``read``: the scores ``plan`` reads (``scores_at``), the
        planned tokens' then each candidate's one appended token's."""
        n, k = plan["reads"].shape
        copies = feed.copies
        scores = feed.scores.view(copies, n, -1).cpu()
        read = read.view(copies, n, -1).cpu()
        scored, one_scores = read[..., :-k], read[..., -k:]
        if feed.head == "lm":
            cumulative = torch.cat([scores.new_zeros(copies, n, 1, dtype=torch.float64), scores.double().cumsum(2)], 2)
            sums = cumulative.gather(2, plan["ends"].expand(copies, -1, -1))
            now, values = sums[..., 0] - sums[..., 1], sums[..., 2:2 + k] - sums[..., 2 + k:]
            counted = torch.where(plan["include"], scored.double(), 0.0)
            values = values.scatter_add(2, plan["candidate"].expand(copies, -1, -1), counted)
            values = values + torch.where(plan["reads"], one_scores.double(), 0.0)
        else:
            now = scores.gather(2, plan["row_last"].expand(copies, -1, -1)).squeeze(2)
            at_last = torch.where(plan["at_zero"], 0.0, scored.gather(2, plan["last"].expand(copies, -1, -1)))
            values = torch.where(plan["reads"], one_scores,
                                 torch.where(plan["has_last"], at_last, now[..., None].expand(-1, -1, k)))
        return torch.where(plan["active"][:, None], values, 0.0), now


class ReencodedTextStream:
    """The slow reference for ``TextStream`` (``use_cache=False``): every read tokenises each row's
    whole text again and encodes it from the start, and each candidate as a sequence of its own."""

    def __init__(self, models: dict, kind: str, tokenizer, template: str, meter: Meter):
        self.models, self.kind, self.tokenizer, self.template, self.meter = models, kind, tokenizer, template, meter
        self.eos_id = tokenizer.eos_token_id
        self.source = self

    def start(self, prompts: list[str], repeats: int) -> None:
        texts = [render_for(self.tokenizer, self.template, p) for p in prompts]
        self.prompt_text = [t for t in texts for _ in range(repeats)]

    def select(self, index: torch.Tensor) -> None:
        self.prompt_text = [self.prompt_text[i] for i in index.tolist()]

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @torch.no_grad()
    def _scores(self, sequences: list[tuple[list[int], int]], candidates: bool = False) -> dict[str, torch.Tensor]:
        """Per role, one number per ``(ids, boundary)``: ``R`` (an LM) or the last token's value."""
        ids, mask = left_pad([s for s, _ in sequences], pad_id(self.tokenizer))
        width = ids.shape[1]
        starts = torch.tensor([width - len(s) + b for s, b in sequences])
        out = {}
        for role, model in self.models.items():
            feed = Feed(model, self.kind)
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs = dict(input_ids=ids.to(feed.device), attention_mask=mask.to(feed.device),
                          position_ids=pos.to(feed.device))
            result = model(**kwargs)
            values = (torch.log_softmax(result.logits.float(), -1) if self.kind == LM else result.values.float()).cpu()
            self.meter.add(role, 1, int(mask.sum()))
            if candidates:
                self.meter.add(role, 0, int(mask.sum()), candidates=True)
            prev = torch.cat([values[:, :1], values[:, :-1]], 1) if feed.head != "scalar" else None
            scores = feed.score_of(prev, values, ids)
            first = mask.long().argmax(1)
            if feed.head != "scalar":  # position 0 of a row has no state before it
                scores[torch.arange(len(sequences)), first] = 0.0
            if feed.head == "lm":
                out[role] = (scores.double() * (torch.arange(width)[None, :] >= starts[:, None])).sum(1)
            else:
                out[role] = scores[:, -1]
        return out

    def _own(self, i: int, text: str, eos: bool) -> tuple[list[int], int]:
        ids = self._tokens(self.prompt_text[i] + text) + ([self.eos_id] if eos else [])
        return ids, common_prefix(self._tokens(self.prompt_text[i]), ids)

    def response_scores(self, rows) -> dict[str, torch.Tensor]:
        ended, finished = rows.ended_eos.tolist(), rows.finished.tolist()
        return self._scores([self._own(i, rows.response_text(i, finished[i]), ended[i])
                             for i in range(len(self.prompt_text))])

    def candidate_scores(self, rows, candidates: torch.Tensor, guided_eos: int | None) -> dict[str, torch.Tensor]:
        n, k = candidates.shape
        cand = candidates.tolist()
        queries = [(i, a) for i in range(n) for a in cand[i] if a != guided_eos]
        texts = iter(rows.response_text(i) + text if extends else text
                     for (i, _), (extends, text) in zip(queries, rows.extended_texts(queries)))
        # the guided EOS: the text the row is output with once it ends (see ``TextStream._eos_branch``)
        sequences = [self._own(i, rows.response_text(i, True) if a == guided_eos else next(texts), a == guided_eos)
                     for i in range(n) for a in cand[i]]
        scores = self._scores(sequences, candidates=True)
        finished = rows.finished.to(torch.bool).cpu()[:, None]
        return ({role: torch.where(finished, 0.0, v.view(n, k)) for role, v in scores.items()},
                self.response_scores(rows))
