"""Methods as config dicts: {token: none|implicit|explicit} x {chunk: none|implicit|explicit|gold}.

``{"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", "W": 4, "K": 4,
"L": 5, "beta": 1.0}}`` is IVG; ``{}`` is plain sampling (parsed by ``spec.Method``). ``build_decoder`` checks the models
before anything is generated. A guiding model whose vocabulary is the guided model's reads the
guided tokens themselves; one with another vocabulary reads the response text in its own tokens
(``aligned.TextStream``), where token-level guidance is defined on text over the guided model's
top-k candidates (ALGORITHMS.md §4, "across vocabularies").
"""

from __future__ import annotations

from typing import Callable

from ..models import same_vocabulary
from ..templates import render_for
from .fit import VocabularyMismatch, check_fits
from .guidance import ExplicitGuide, ImplicitGuide, TextExplicitGuide, TextImplicitGuide
from .sampler import Sampling
from .scorers import ExplicitScorer, ImplicitScorer, RewardScorer, TextExplicitScorer, TextImplicitScorer
from .search import Decoder, Member
from .spec import EXPLICIT_TOP_K, Method, Search


def _check_template(members: dict[str, Member], role: str) -> None:
    member = members[role]
    try:
        render_for(member.tokenizer, member.template, "a prompt")
    except Exception as error:  # transformers raises several kinds for a missing chat template
        raise ValueError(f"the {role} model's tokenizer cannot render its template {member.template!r}: {error}") from None


def build_decoder(method: Method | dict, members: dict[str, Member], *, reward: Callable | None = None,
                  reward_tokenizer=None, sampling: Sampling = Sampling(), max_new_tokens: int = 32, stop=(),
                  use_cache: bool = True, pair_small: bool = True, read_text: bool | None = None) -> Decoder:
    """A ``Decoder`` for a method, after checking that the models it needs are there and compatible
    (each tokenizer fits its model: ``fit.check_fits``).

    ``read_text``: whether the guiding models read the response as text in their own tokens; None
    (the default) decides per model, by whether its vocabulary differs from the guided model's.
    True takes the text path even for a shared vocabulary (to compare the two)."""
    method = Method.from_config(method) if isinstance(method, dict) else method
    have = set(members) | ({"reward"} if reward is not None else set())
    missing = sorted(method.roles() - have)
    if missing:
        raise ValueError(f"method {method} needs models for {missing}")
    for role, member in members.items():
        check_fits(role, member.model, member.tokenizer)
    if "tuned" in members and "untuned" in members and not same_vocabulary(
            members["tuned"].tokenizer, members["untuned"].tokenizer):
        raise VocabularyMismatch("the tuned and untuned small models must share one vocabulary")
    guided = members["guided"].tokenizer
    roles = method.roles() - {"reward"}
    for role in ("guided", *sorted(roles)):
        _check_template(members, role)
    text = {role for role in roles if (read_text if read_text is not None
                                       else not same_vocabulary(guided, members[role].tokenizer))}
    token, chunk = method.token, method.chunk
    guides = []
    if token.kind == "implicit":
        top_k = token.top_k or 0
        if "untuned" in text:
            if not top_k:
                raise ValueError("token-level implicit guidance (EFT) across vocabularies is defined on text over "
                                 "the guided model's top-k candidates: set token.top_k (the sampling top_k, "
                                 "when sampling uses top-k, leaves nothing out)")
            guides.append(TextImplicitGuide(token.w, top_k, token.mask_outside_topk, guided.eos_token_id))
        else:
            guides.append(ImplicitGuide(token.w, top_k, token.mask_outside_topk))
    elif token.kind == "explicit":
        top_k = EXPLICIT_TOP_K if token.top_k is None else token.top_k
        if "value" in text:
            if not top_k:
                raise ValueError("token-level explicit guidance (VAS) across vocabularies scores the guided "
                                 "model's top-k candidates: token.top_k must be at least 1")
            guides.append(TextExplicitGuide(token.beta, top_k, token.mask_outside_topk, guided.eos_token_id))
        else:
            guides.append(ExplicitGuide(members["value"].model.head_kind, token.beta, top_k,
                                        token.mask_outside_topk))
    scorer = None
    if chunk.scorer == "explicit":
        scorer = TextExplicitScorer(chunk.beta) if "value" in text else \
            ExplicitScorer(members["value"].model.head_kind, chunk.beta)
    elif chunk.scorer == "implicit":
        scorer = TextImplicitScorer(chunk.beta) if "untuned" in text else ImplicitScorer(chunk.beta)
    elif chunk.scorer == "gold":
        scorer = RewardScorer(reward, reward_tokenizer)
    return Decoder(members, token_guides=guides, scorer=scorer, search=Search(chunk.W, chunk.K, chunk.L),
                   sampling=sampling, max_new_tokens=max_new_tokens, stop=stop, use_cache=use_cache,
                   pair_small=pair_small, text_roles=text)
