"""Guided decoding, the library: base sampling, EFT, VAS, FUDGE, chunk-level beam search, BoN, IVG.

``guide`` is the one-call entry; ``build_decoder`` + ``Decoder.generate`` the lower level; the
pipeline stage that runs them over a config's prompts is ``valueguide.generate``. The math is
docs/ALGORITHMS.md §4.

The names below load on first use: the Snakefile reads methods through ``decoding.method_spec`` while
planning, and importing this package must not import torch for it.
"""

from importlib import import_module

_HOME = {
    "guide": "api",
    "ExplicitGuide": "guidance", "FudgeGuide": "guidance", "ImplicitGuide": "guidance", "TextExplicitGuide": "guidance",
    "TextImplicitGuide": "guidance",
    "VocabularyMismatch": "tokenizer_fit", "build_decoder": "method",
    "ChunkSpec": "method_spec", "Method": "method_spec", "Search": "method_spec", "TokenSpec": "method_spec",
    "Sampling": "sampler",
    "ExplicitScorer": "scorers", "ImplicitScorer": "scorers", "RewardScorer": "scorers",
    "TextExplicitScorer": "scorers", "TextImplicitScorer": "scorers",
    "Decoder": "search", "Generation": "search", "Member": "search", "Result": "search",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value
