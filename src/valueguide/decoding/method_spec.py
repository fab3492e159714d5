"""What a method is, as parsed from its config section, without loading anything.

A method is ``{token: none|implicit|explicit|fudge} x {chunk: none|implicit|explicit|gold}`` with a beam
shape ``Search(W, K, L)``, applied to the guided model or (``finetuned: NAME``) to its copy tuned by the
finetune entry NAME. The Snakefile's preflight and ``valueguide plan`` read methods through
this module, which imports neither torch nor transformers; ``method.build_decoder`` turns one into
a decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

TOKEN_KINDS = ("none", "implicit", "explicit", "fudge")
SCORERS = ("none", "implicit", "explicit", "gold")


EXPLICIT_TOP_K = 20  # VAS's candidate set, and FUDGE's
# Positions a stream feeds a model in one pass at most (``streams.Stream.max_block``, bounding the [N, T, V]
# outputs of a long catch-up): here, so that the planner counts passes without importing torch.
MAX_BLOCK = 256


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
    beta: float = 1.0  # explicit: weight of the centred value; fudge: of the classifier's log-probability
    # candidate set size, 0: the full vocabulary; unset: 20 for explicit and fudge, the full vocabulary for
    # implicit (across vocabularies, where guidance is defined on text, both need a k)
    top_k: int | None = None
    # outside the candidate set C: None (unset) masks across vocabularies, where the guide's bonus is
    # defined on C only, and keeps z_L in the shared vocabulary (VAS's decoder); True masks, False
    # keeps (refused across vocabularies: ``method.build_decoder``)
    mask_outside_topk: bool | None = None

    def __post_init__(self):
        if self.kind not in TOKEN_KINDS:
            raise ValueError(f"unknown token-level kind {self.kind!r}; use one of {TOKEN_KINDS}")


@dataclass(frozen=True)
class Search:
    """CBS shape: keep the best ``W`` rows, copy each ``K`` times, ``L`` tokens per chunk (None: to the end)."""

    W: int = 1
    K: int = 1
    L: int | None = None

    def __post_init__(self):
        if self.W < 1 or self.K < 1 or (self.L is not None and self.L < 1):
            raise ValueError(f"CBS needs W, K, L >= 1 (L may be None); got {self}")

    @property
    def rows(self) -> int:
        return self.W * self.K


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
    # a finetune entry's name: the guided model is its tuned copy (results/finetuned/NAME/MODEL), the
    # frozen model stays beside it as the reference the KL is measured from
    finetuned: str | None = None

    def __post_init__(self):
        if self.finetuned is not None and (not isinstance(self.finetuned, str) or not self.finetuned):
            raise ValueError(f"finetuned names a finetune entry; got {self.finetuned!r}")

    @classmethod
    def from_config(cls, method: dict) -> "Method":
        unknown = set(method) - {"token", "chunk", "finetuned"}
        if unknown:
            raise ValueError(f"a method has sections 'token', 'chunk' and 'finetuned'; got unknown {sorted(unknown)}")
        return cls(_parse(TokenSpec, method.get("token"), "token-level"),
                   _parse(ChunkSpec, method.get("chunk"), "chunk-level"), method.get("finetuned"))

    def roles(self) -> set[str]:
        """The models this method needs besides the guided one (``reward`` for the gold scorer)."""
        need = {"implicit": {"tuned", "untuned"}, "explicit": {"value"}, "fudge": {"classifier"}, "gold": {"reward"},
                "none": set()}
        return need[self.token.kind] | need[self.chunk.scorer]

    def kl_kind(self) -> str:
        """How this method's KL from the frozen model is known (docs/ALGORITHMS.md §5.4): ``exact`` with one
        row per prompt (the per-token KLs summed along it estimate the sequence KL without bias);
        ``upper_bound`` for best-of-N of the frozen model's plain samples (``kl_bound``); ``undefined`` for
        other chunk-level search, whose output is chosen among rows by a scorer, and for best-of-N over a tuned
        copy (the bound holds from the model sampled, not from the frozen one)."""
        chunk = self.chunk
        if chunk.W * chunk.K == 1:
            return "exact"
        if self.token.kind == "none" and chunk.W == 1 and chunk.L is None and self.finetuned is None:
            return "upper_bound"
        return "undefined"

    def kl_bound(self) -> float | None:
        """Best-of-N's ``log N - (N - 1) / N`` (an upper bound on its KL from the sampled model), else None."""
        n = self.chunk.K
        return math.log(n) - (n - 1) / n if self.kl_kind() == "upper_bound" else None
