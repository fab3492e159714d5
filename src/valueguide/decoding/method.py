"""Methods as config dicts: {token: none|implicit|explicit} x {chunk: none|implicit|explicit|gold}.

``{"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", "W": 4, "K": 4,
"L": 5, "beta": 1.0}}`` is IVG; ``{}`` is plain sampling. ``build_decoder`` checks vocabularies
before anything is generated: token-level guidance adds logits, so it refuses models that do not
share one vocabulary; a chunk scorer with another vocabulary falls back to scoring decoded text.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

from ..models import same_vocabulary
from .guidance import ExplicitGuide, ImplicitGuide
from .sampler import Sampling
from .scorers import ExplicitScorer, ImplicitScorer, RewardScorer, TextExplicitScorer, TextImplicitScorer
from .search import Decoder, Member, Search

TOKEN_KINDS = ("none", "implicit", "explicit")
SCORERS = ("none", "implicit", "explicit", "gold")


class VocabularyMismatch(ValueError):
    """Token-level guidance between models that do not share one vocabulary."""


def _parse(cls, section: dict | None, what: str):
    section = dict(section or {})
    names = {f.name for f in fields(cls)}
    unknown = set(section) - names
    if unknown:
        raise ValueError(f"unknown {what} option(s) {sorted(unknown)}; allowed: {sorted(names)}")
    return cls(**section)


@dataclass(frozen=True)
class TokenSpec:
    kind: str = "none"
    w: float = 1.0  # implicit: weight of the log-ratio
    beta: float = 1.0  # explicit: weight of the centred value
    top_k: int | None = 20  # explicit: candidate set size (0/None: the full vocabulary)
    mask_outside_topk: bool = False

    def __post_init__(self):
        if self.kind not in TOKEN_KINDS:
            raise ValueError(f"unknown token-level kind {self.kind!r}; use one of {TOKEN_KINDS}")


@dataclass(frozen=True)
class ChunkSpec:
    scorer: str = "none"
    W: int = 1
    K: int = 1
    L: int | None = None
    beta: float = 1.0

    def __post_init__(self):
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown chunk scorer {self.scorer!r}; use one of {SCORERS}")
        Search(self.W, self.K, self.L)  # validates the shape


@dataclass(frozen=True)
class Method:
    token: TokenSpec = TokenSpec()
    chunk: ChunkSpec = ChunkSpec()

    @classmethod
    def from_config(cls, method: dict) -> "Method":
        unknown = set(method) - {"token", "chunk"}
        if unknown:
            raise ValueError(f"a method has sections 'token' and 'chunk'; got unknown {sorted(unknown)}")
        return cls(_parse(TokenSpec, method.get("token"), "token-level"),
                   _parse(ChunkSpec, method.get("chunk"), "chunk-level"))

    def roles(self) -> set[str]:
        """The models this method needs besides the guided one (``reward`` for the gold scorer)."""
        need = {"implicit": {"tuned", "untuned"}, "explicit": {"value"}, "gold": {"reward"}, "none": set()}
        return need[self.token.kind] | need[self.chunk.scorer]


def _require_shared(members: dict[str, Member], role: str, why: str) -> None:
    if not same_vocabulary(members["guided"].tokenizer, members[role].tokenizer):
        raise VocabularyMismatch(
            f"{why} adds the {role} model's scores to the guided model's logits, so both must share one "
            f"vocabulary, and these tokenizers differ; use a chunk-level method (it scores decoded text)")


def build_decoder(method: Method | dict, members: dict[str, Member], *, reward: Callable | None = None,
                  reward_tokenizer=None, sampling: Sampling = Sampling(), max_new_tokens: int = 32, stop=(),
                  use_cache: bool = True, pair_small: bool = True) -> Decoder:
    """A ``Decoder`` for a method, after checking that the models it needs are there and compatible."""
    method = Method.from_config(method) if isinstance(method, dict) else method
    have = set(members) | ({"reward"} if reward is not None else set())
    missing = sorted(method.roles() - have)
    if missing:
        raise ValueError(f"method {method} needs models for {missing}")
    if "tuned" in members and "untuned" in members and not same_vocabulary(
            members["tuned"].tokenizer, members["untuned"].tokenizer):
        raise VocabularyMismatch("the tuned and untuned small models must share one vocabulary")
    token, chunk = method.token, method.chunk
    guides = []
    if token.kind == "implicit":
        _require_shared(members, "untuned", "token-level implicit guidance (EFT)")
        guides.append(ImplicitGuide(token.w))
    elif token.kind == "explicit":
        _require_shared(members, "value", "token-level explicit guidance (VAS)")
        guides.append(ExplicitGuide(members["value"].model.head_kind, token.beta, token.top_k,
                                   token.mask_outside_topk))
    guided_tok = members["guided"].tokenizer
    scorer = None
    if chunk.scorer == "explicit":
        value = members["value"]
        if same_vocabulary(guided_tok, value.tokenizer):
            scorer = ExplicitScorer(value.model.head_kind, chunk.beta, value.tokenizer.eos_token_id)
        else:
            scorer = TextExplicitScorer(value.model, value.tokenizer, value.template, chunk.beta)
    elif chunk.scorer == "implicit":
        small = members["untuned"]
        if same_vocabulary(guided_tok, small.tokenizer):
            scorer = ImplicitScorer(chunk.beta)
        else:
            scorer = TextImplicitScorer(members["tuned"].model, small.model, small.tokenizer, small.template,
                                        chunk.beta)
    elif chunk.scorer == "gold":
        scorer = RewardScorer(reward, reward_tokenizer)
    return Decoder(members, token_guides=guides, scorer=scorer, search=Search(chunk.W, chunk.K, chunk.L),
                   sampling=sampling, max_new_tokens=max_new_tokens, stop=stop, use_cache=use_cache,
                   pair_small=pair_small)
