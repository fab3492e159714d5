"""The decoding loop: token-level sampling (optionally guided) inside chunk-level beam search.

Every method is ``CBS(W, K, L; scorer)`` with a token sampler: plain sampling is ``W = K = 1``,
``L = inf``; best-of-N is ``W = 1, K = N, L = inf``. All ``W*K`` rows of every prompt of a batch
advance together, one forward pass per model per step; after each chunk the best ``W`` rows of
each prompt (stable sort: ties by row order) are copied ``K`` times, and every model's cache
follows by one index select. A prompt is done when its best ``W`` rows have all finished or
``max_new_tokens`` is reached; its rows then leave the batch.

Every row also sums, along its response, the KL of each token's distribution from the frozen model's
(the ``reference`` member's, else the guided model's own unguided one): ``Generation.kl``
(docs/ALGORITHMS.md §5.4), unless ``measure_kl`` is false (``build_decoder`` turns it off where the sum
is not the method's KL: chunk-level search, whose 16 or more rows a step would pay for it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..models import same_vocabulary
from ..templates import render_for
from .aligned import Feed, ReencodedTextStream, TextStream
from .retokenize import OneTokenAppends, Retokenizer
from .detokenize import Pieces, ResponseText
from .paired import PairingError, pair_models
from .sampler import Sampling, draw
from .method_spec import Search
from .streams import LM, Meter, PairedStream, Stream, pad_id
from .tokenizer_fit import VocabularyMismatch

log = logging.getLogger(__name__)
PAIR = ("tuned", "untuned")
REFERENCE = "reference"  # the frozen model a fine-tuned guided model started from: the KL's reference


@dataclass
class Member:
    """A model taking part in decoding, with the tokenizer and template it sees the prompt through."""

    model: object
    tokenizer: object
    template: str = "{prompt}"
    kind: str = LM  # "lm" (causal LM) or "value" (ValueModel)

    def encode_prompt(self, prompt: str) -> list[int]:
        text = render_for(self.tokenizer, self.template, prompt)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"prompt {prompt!r} renders to no tokens through template {self.template!r}")
        return ids


@dataclass
class Generation:
    text: str
    ids: list[int]
    finished: bool
    kl: float = 0.0  # nats: the per-token KL from the frozen model, summed along the response (NaN: not measured)


@dataclass
class Result:
    generations: list[Generation]
    meter: Meter
    sampled: int = 0  # response tokens drawn, over all rows


class Rows:
    """The rows of one batch: the shared response tokens (and their text), finish flags, prompt of
    each row, and every model's stream (fed lazily, on first use after the response grew)."""

    def __init__(self, prompts: list[str], per_prompt: int, streams: dict[str, Stream], meter: Meter,
                 tokenizer, device, stop: tuple[str, ...] = (), pieces: Pieces | None = None):
        self.prompts, self.per_prompt, self.streams, self.meter = prompts, per_prompt, streams, meter
        self.tokenizer, self.device, self.stop = tokenizer, device, stop
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = pad_id(tokenizer)
        self.alive = list(range(len(prompts)))  # prompt index of each group of rows
        n = len(prompts) * per_prompt
        self.ids = torch.zeros((n, 0), dtype=torch.long, device=device)
        self.mask = torch.zeros((n, 0), dtype=torch.bool, device=device)
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)
        self.ended_eos = torch.zeros(n, dtype=torch.bool, device=device)
        self.sampled = 0
        self.kl = torch.zeros(n, dtype=torch.float64, device=device)  # summed along each row's response
        self.response_texts = ResponseText(tokenizer, n, pieces)

    @property
    def n(self) -> int:
        return self.ids.shape[0]

    @property
    def t(self) -> int:
        return self.ids.shape[1]

    def prompt(self, row: int) -> str:
        return self.prompts[self.alive[row // self.per_prompt]]

    # --- model outputs at the current state ----------------------------------------------------

    def last(self, role: str) -> torch.Tensor:
        stream = self.streams[role]
        stream.sync(self.ids, self.mask)
        return stream.last

    def taken(self, role: str) -> torch.Tensor:
        stream = self.streams[role]
        stream.sync(self.ids, self.mask)
        return stream.taken

    def peek(self, role: str, candidates: torch.Tensor) -> torch.Tensor:
        return self.streams[role].sync(self.ids, self.mask, peek=candidates)

    # --- the response as text (for models with other tokenizers) ---------------------------------

    def length(self, row: int) -> int:
        """Response tokens of ``row`` so far."""
        return len(self.token_ids(row))

    def token_ids(self, row: int) -> list[int]:
        """The response tokens of ``row`` so far (the list itself: do not change it)."""
        return self.response_texts.ids(row)

    def response_text(self, row: int, finished: bool = False) -> str:
        """``u``: the response text of ``row``, an incomplete last character held back unless finished."""
        return self.response_texts.text(row, finished)

    def whole_text(self, row: int) -> bool:
        """Whether ``u`` of ``row`` is its whole decode, not empty (see ``ResponseText.whole``)."""
        return self.response_texts.whole(row)

    def extended_texts(self, queries: list[tuple[int, int]]) -> list[tuple[bool, str]]:
        """``u`` after one more token, for each ``(row, token)``: ``(True, what it appends)`` or
        ``(False, the new u)`` (see ``ResponseText.extended``)."""
        return self.response_texts.extended(queries)

    # --- growing and selecting rows --------------------------------------------------------------

    def append(self, tokens: torch.Tensor, kl: torch.Tensor | None = None) -> None:
        """Add one token to every unfinished row, and ``kl`` (the KL of the distribution it was drawn from,
        [N]; None: 0) to its sum; a finished row gets padding and stays as it is."""
        active = ~self.finished
        if kl is not None:
            self.kl = self.kl + torch.where(active, kl.to(self.device), 0.0)
        tokens = torch.where(active, tokens.to(self.device), self.pad_id)
        self.ids = torch.cat([self.ids, tokens[:, None]], 1)
        self.mask = torch.cat([self.mask, active[:, None]], 1)
        self.response_texts.append([t if a else None for t, a in zip(tokens.tolist(), active.tolist())])
        eos = active & (tokens == self.eos_id)
        self.ended_eos |= eos
        self.finished |= eos
        self.sampled += int(active.sum())
        if self.stop:
            for row in (active & ~eos).nonzero().flatten().tolist():
                if any(s in self.response_text(row) for s in self.stop):
                    self.finished[row] = True

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.device)
        for name in ("ids", "mask", "finished", "ended_eos", "kl"):
            setattr(self, name, getattr(self, name)[index])
        self.response_texts.select(index.tolist())
        for source in {id(s.source): s.source for s in self.streams.values()}.values():
            source.select(index)  # once per model, though a paired model serves two roles

    def response(self, row: int) -> list[int]:
        return self.ids[row][self.mask[row]].tolist()

    def text(self, row: int) -> str:
        return self.response_text(row, finished=True)

    def set_responses(self, responses: list[list[int]]) -> None:
        """Start every row from a given response (equal lengths): for inspecting distributions."""
        self.ids = torch.tensor(responses, dtype=torch.long, device=self.device).view(len(responses), -1)
        self.mask = torch.ones_like(self.ids, dtype=torch.bool)
        for column in self.ids.T.tolist():
            self.response_texts.append(column)

    def texts(self) -> list[str]:
        return [self.text(row) for row in range(self.n)]

    def generation(self, row: int) -> Generation:
        return Generation(self.text(row), self.response(row), bool(self.finished[row]), float(self.kl[row]))


class Decoder:
    """Guided decoding: token guides applied in turn to the guided model's logits (each also sees
    the unguided logits), inside CBS with one chunk scorer (or none, for one row per prompt).

    ``members`` maps roles to models: ``guided`` always; ``tuned``/``untuned``/``value`` as the
    guides and the scorer need them; ``reference``, optionally, the frozen model the KL is measured from
    (a fine-tuned guided model's original: same tokenizer; its passes are no cost of the method, though
    they take wall time). The roles in ``text_roles`` read the rows as text in their own tokens
    (``aligned.TextStream``: guidance across vocabularies); the others share the guided model's
    tokens. ``use_cache=False`` re-encodes every sequence at every step (the slow reference for tests
    and benchmarks; same outputs). ``pair_small=True`` runs the tuned and untuned models as one paired
    model (one pass for both, see ``paired.py``) where they can be. ``measure_kl=False`` leaves
    ``Generation.kl`` NaN and spares the KL's two log-sum-exps over the vocabulary per row and step.
    """

    def __init__(self, members: dict[str, Member], *, token_guides=(), scorer=None, search: Search = Search(),
                 sampling: Sampling = Sampling(), max_new_tokens: int = 32, stop=(), use_cache: bool = True,
                 pair_small: bool = True, text_roles=frozenset(), measure_kl: bool = True):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if search.rows > 1 and scorer is None:
            raise ValueError(f"CBS with W*K = {search.rows} rows needs a scorer")
        self.members, self.token_guides, self.scorer, self.search = members, tuple(token_guides), scorer, search
        self.sampling, self.max_new_tokens, self.stop, self.use_cache = sampling, max_new_tokens, tuple(stop), use_cache
        self.text_roles, self.measure_kl = frozenset(text_roles), measure_kl
        if self.text_roles & set(members):
            log.info("across vocabularies, read as text in their own tokens: %s",
                     ", ".join(sorted(self.text_roles & set(members))))
        missing = set(self._roles()) - set(members)
        if missing:
            raise ValueError(f"the method needs models for roles {sorted(missing)}")
        if REFERENCE in members and not same_vocabulary(members["guided"].tokenizer, members[REFERENCE].tokenizer):
            raise VocabularyMismatch("the reference model (the frozen model the KL is measured from) must share the "
                                     "guided model's tokenizer: the KL compares their next-token distributions token "
                                     "by token")
        self._pieces = Pieces(members["guided"].tokenizer)  # what the guided tokens append, kept across calls
        self._retokenizers = {role: Retokenizer(members[role].tokenizer) for role in self.text_roles
                              if role in members and use_cache}
        self._one_token_appends = {role: OneTokenAppends(self._pieces, r.appends) for role, r in self._retokenizers.items()}
        self.paired = self._pair() if pair_small and set(PAIR) <= set(self._roles()) else None

    def _pair(self):
        tuned, untuned = (self.members[r] for r in PAIR)
        try:
            if tuned.template != untuned.template:
                raise PairingError("they see the prompt through different templates")
            return pair_models(tuned.model, untuned.model)
        except PairingError as error:
            log.info("the tuned and untuned models run one after the other: %s", error)
            return None

    def _roles(self) -> dict[str, bool]:
        """Roles whose streams this decoder feeds, and whether each must track taken-token scores."""
        roles = {"guided": False, **({REFERENCE: False} if REFERENCE in self.members else {})}
        for part in (*self.token_guides, self.scorer):
            for role, track in (part.roles if part is not None else {}).items():
                roles[role] = roles.get(role, False) or track
        return roles

    def _text_stream(self, roles: tuple[str, ...], meter: Meter):
        """One stream for roles that read the rows as text and share a tokenizer and template."""
        member = self.members[roles[0]]
        if not self.use_cache:
            return ReencodedTextStream({r: self.members[r].model for r in roles}, member.kind, member.tokenizer,
                                       member.template, meter)
        kept = self._retokenizers[roles[0]], self._one_token_appends[roles[0]]
        if roles == PAIR and self.paired is not None:
            feed = Feed(self.paired, LM, copies=2)
            return TextStream({"tuned": (feed, 0), "untuned": (feed, 1)}, member.tokenizer, member.template, meter,
                              *kept)
        return TextStream({r: (Feed(self.members[r].model, member.kind), 0) for r in roles}, member.tokenizer,
                          member.template, meter, *kept)

    def _start(self, prompts: list[str], per_prompt: int) -> Rows:
        meter, streams, roles = Meter(), {}, self._roles()
        for group in (PAIR, ("value",)):
            if set(group) <= set(roles) and set(group) <= self.text_roles:
                stream = self._text_stream(group, meter)
                stream.start(prompts, per_prompt)
                for role in group:
                    streams[role] = stream
                    roles.pop(role)
        if self.paired is not None and set(PAIR) <= set(roles):
            untuned = self.members["untuned"]
            pair = PairedStream(PAIR, self.paired, meter, use_cache=self.use_cache,
                                track=roles.pop("tuned") | roles.pop("untuned"), pad_id=pad_id(untuned.tokenizer))
            pair.start([untuned.encode_prompt(p) for p in prompts], per_prompt)
            streams.update({role: pair.half(i) for i, role in enumerate(PAIR)})
        for role, track in roles.items():
            member = self.members[role]
            stream = Stream(role, member.model, member.kind, meter if role != REFERENCE else Meter(),
                            use_cache=self.use_cache, track=track, pad_id=pad_id(member.tokenizer))
            stream.start([member.encode_prompt(p) for p in prompts], per_prompt)
            streams[role] = stream
        guided = self.members["guided"]
        return Rows(prompts, per_prompt, streams, meter, guided.tokenizer, streams["guided"].device, self.stop,
                    self._pieces)

    def _step(self, rows: Rows, measure_kl: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The distribution each row's next token is drawn from ([N, V]) and, with ``measure_kl``, its KL
        from the frozen model's ([N] float64; None where it is not measured, or is 0 by construction: no guide
        and no reference)."""
        logits = base = rows.last("guided")
        for guide in self.token_guides:
            logits = guide.adjust(logits, base, rows)
        probs = self.sampling.probs(logits)
        if not measure_kl or (not self.token_guides and REFERENCE not in self.members):
            return probs, None
        frozen = rows.last(REFERENCE) if REFERENCE in self.members else base
        return probs, self.sampling.kl(probs, logits, frozen)

    def _inspected(self, prompts: list[str], responses: list[list[int]]) -> Rows:
        if len({len(r) for r in responses}) > 1:
            raise ValueError("responses must all have the same length")
        rows = self._start(prompts, 1)
        rows.set_responses(responses)
        return rows

    @torch.no_grad()
    def next_token_probs(self, prompts: list[str], responses: list[list[int]]) -> torch.Tensor:
        """The distributions the next tokens are drawn from after each prompt + response ([N, V]);
        responses must have one length. For inspecting a method, and for exactness tests."""
        return self._step(self._inspected(prompts, responses), measure_kl=False)[0]

    @torch.no_grad()
    def next_token_kl(self, prompts: list[str], responses: list[list[int]]) -> torch.Tensor:
        """``KL(p_method || p_ref)`` of the next token after each prompt + response ([N] float64), the terms
        ``Generation.kl`` sums (docs/ALGORITHMS.md §5.4)."""
        kl = self._step(self._inspected(prompts, responses), measure_kl=True)[1]
        return kl if kl is not None else torch.zeros(len(prompts), dtype=torch.float64)

    def _chunk(self, rows: Rows, generator) -> None:
        steps = 0
        while ((self.search.L is None or steps < self.search.L) and rows.t < self.max_new_tokens
               and not bool(rows.finished.all())):
            probs, kl = self._step(rows, self.measure_kl)
            rows.append(draw(probs, generator), kl)
            steps += 1

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: torch.Generator | None = None) -> Result:
        """One generation per prompt, all prompts in one batch of ``len(prompts) * W * K`` rows."""
        W, K, R = self.search.W, self.search.K, self.search.rows
        rows = self._start(prompts, R)
        if not self.measure_kl:
            rows.kl.fill_(float("nan"))
        done: list[Generation | None] = [None] * len(prompts)
        while rows.alive:
            self._chunk(rows, generator)
            scores = self.scorer.score(rows) if R > 1 else torch.zeros(rows.n, device=rows.device)
            groups = len(rows.alive)
            top = scores.view(groups, R).sort(dim=1, descending=True, stable=True).indices[:, :W]
            first = torch.arange(groups, device=rows.device)[:, None] * R
            best = first + top
            over = rows.finished[best].all(1) | (rows.t >= self.max_new_tokens)
            for g in over.nonzero().flatten().tolist():
                done[rows.alive[g]] = rows.generation(int(best[g, 0]))
            keep = (~over).nonzero().flatten()
            rows.alive = [rows.alive[g] for g in keep.tolist()]
            if rows.alive:
                rows.select(best[keep].repeat_interleave(K, dim=1).flatten())
        return Result(done, rows.meter, rows.sampled)
