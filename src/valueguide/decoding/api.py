"""``guide``: value-guided generation from Python in one call."""

from __future__ import annotations

from typing import Callable

import torch

from .tokenizer_fit import own_tokenizer
from .method import build_decoder
from .sampler import Sampling
from .search import Member
from .streams import VALUE


def guide(model, tokenizer, prompts: list[str], *, method: dict | None = None, value_model=None,
          value_tokenizer=None, tuned=None, untuned=None, small_tokenizer=None, reward: Callable | None = None,
          template: str = "{prompt}", small_template: str = "{prompt}", value_template: str | None = None,
          temperature: float = 0.7, top_k: int = 0, top_p: float = 1.0, max_new_tokens: int = 32,
          stop: tuple[str, ...] = (), seed: int = 1, batch_size: int = 8, pair_small: bool = True) -> list[str]:
    """Generate one response per prompt from ``model`` guided as ``method`` says.

    ``method`` is a config dict, e.g. IVG: ``{"token": {"kind": "implicit", "w": 1.0},
    "chunk": {"scorer": "explicit", "W": 4, "K": 4, "L": 5, "beta": 1.0}}``; ``{}``/None samples
    plainly. Pass what the method needs: ``value_model`` (a ``ValueModel``; its template defaults to
    its ``meta["template"]``), ``tuned``/``untuned`` (the small DPO pair, sharing
    ``small_tokenizer``), ``reward`` (texts -> scores, for the gold scorer). A guiding model's
    tokenizer defaults to the one saved with it (in the folder it was loaded from, see
    ``tokenizer_fit.own_tokenizer``), else to ``tokenizer``; a tokenizer that does not fit its model is refused
    before anything is generated (``tokenizer_fit.check_fits``: a model given another vocabulary's ids would
    read unrelated tokens). ``batch_size`` prompts are decoded together; the same seed gives the same
    texts.
    With ``pair_small`` the tuned/untuned pair runs as one paired model where it can (one pass for
    both; their parameters then view one stacked tensor, with unchanged values).
    """
    members = {"guided": Member(model, tokenizer, template)}
    small_tokenizer = small_tokenizer or _own(untuned) or _own(tuned) or tokenizer
    if tuned is not None:
        members["tuned"] = Member(tuned, small_tokenizer, small_template)
    if untuned is not None:
        members["untuned"] = Member(untuned, small_tokenizer, small_template)
    if value_model is not None:
        vt = value_template or value_model.meta.get("template", "{prompt}")
        members["value"] = Member(value_model, value_tokenizer or _own(value_model) or tokenizer, vt, VALUE)
    decoder = build_decoder(method or {}, members, reward=reward,
                            sampling=Sampling(temperature, top_k, top_p), max_new_tokens=max_new_tokens, stop=stop,
                            pair_small=pair_small)
    generator = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts += [g.text for g in decoder.generate(prompts[start:start + batch_size], generator).generations]
    return texts


def _own(model):
    return own_tokenizer(model) if model is not None else None
