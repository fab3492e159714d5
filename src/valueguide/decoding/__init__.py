"""Guided decoding (stage generate): base sampling, EFT, VAS, chunk-level beam search, BoN, IVG.

``guide`` is the one-call entry; ``build_decoder`` + ``Decoder.generate`` the lower level;
``run_generate`` the pipeline stage. The math is ALGORITHMS.md §4 of the design notes.
"""

from .api import guide
from .guidance import ExplicitGuide, ImplicitGuide, TextExplicitGuide, TextImplicitGuide
from .method import ChunkSpec, Method, TokenSpec, VocabularyMismatch, build_decoder
from .sampler import Sampling
from .scorers import ExplicitScorer, ImplicitScorer, RewardScorer, TextExplicitScorer, TextImplicitScorer
from .search import Decoder, Generation, Member, Result, Search
from .stage import run_generate

__all__ = [
    "ChunkSpec", "Decoder", "ExplicitGuide", "ExplicitScorer", "Generation", "ImplicitGuide", "ImplicitScorer",
    "Member", "Method", "Result", "RewardScorer", "Sampling", "Search", "TextExplicitGuide", "TextExplicitScorer",
    "TextImplicitGuide", "TextImplicitScorer",
    "TokenSpec", "VocabularyMismatch", "build_decoder", "guide", "run_generate",
]
