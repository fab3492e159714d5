"""Methods as config dicts: {token: none|implicit|explicit|fudge} x {chunk: none|implicit|explicit|gold}.

``{"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", "W": 4, "K": 4,
"L": 5, "beta": 1.0}}`` is IVG; ``{}`` is plain sampling (parsed by ``method_spec.Method``). ``build_decoder`` checks the models
before anything is generated. A guiding model whose vocabulary is the guided model's reads the
guided tokens themselves; one with another vocabulary reads the response text in its own tokens
(``aligned.TextStream``), where token-level guidance is defined on text over the guided model's
top-k candidates ``C`` (docs/ALGORITHMS.md §4.6).

Across vocabularies the draw is always restricted to ``C``: the guide's bonus (``psi`` on text, or
``Q`` on text) exists only there, and an unguided logit outside ``C`` is on another scale than a
guided one, so a candidate pushed down by its bonus would lose to tokens the guide never read.
Sampling's own top-k cannot do this: it acts on the guided logits, after the bonus. In the shared
vocabulary a token guide keeps ``z_L`` outside ``C`` unless ``mask_outside_topk`` is true (VAS's
decoder keeps it).
"""

from __future__ import annotations

from typing import Callable

from ..models import same_vocabulary
from ..templates import render_for
from .tokenizer_fit import VocabularyMismatch, check_fits, model_name
from .guidance import ExplicitGuide, FudgeGuide, ImplicitGuide, TextExplicitGuide, TextImplicitGuide
from .sampler import Sampling
from .scorers import ExplicitScorer, ImplicitScorer, RewardScorer, TextExplicitScorer, TextImplicitScorer
from .search import Decoder, Member
from .method_spec import EXPLICIT_TOP_K, Method, Search


def _check_template(members: dict[str, Member], role: str) -> None:
    member = members[role]
    try:
        render_for(member.tokenizer, member.template, "a prompt")
    except Exception as error:  # transformers raises several kinds for a missing chat template
        raise ValueError(f"the {role} model's tokenizer cannot render its template {member.template!r}: {error}") from None


def _refuse_keeping_outside(token, members: dict[str, Member], role: str) -> None:
    """Across vocabularies the draw is restricted to the candidates: an explicit false is refused."""
    if token.mask_outside_topk is False:
        theirs, guided = model_name(members[role].model), model_name(members["guided"].model)
        raise ValueError(
            f"token.mask_outside_topk: false cannot be honoured: the {role} model ({theirs}) reads the response in "
            f"another vocabulary than the guided model ({guided}), where the guide's bonus is defined only on the "
            "candidate set C = top-k of the guided logits and a token outside C would compete unguided, on another "
            "scale; leave mask_outside_topk unset (the draw is restricted to C)")


def _check_fudge(token, members: dict[str, Member], across: bool) -> None:
    """FUDGE reads one classifier logit per guided token from a token head: one vocabulary, candidates masked."""
    classifier, guided = model_name(members["classifier"].model), model_name(members["guided"].model)
    if across:
        raise VocabularyMismatch(
            f"FUDGE's classifier ({classifier}) reads another vocabulary than the guided model ({guided}): its token "
            "head scores the guided model's own next tokens, so both must share one vocabulary")
    if getattr(members["classifier"].model, "head_kind", None) != "token":
        raise ValueError(f"FUDGE's classifier ({classifier}) needs a token head (one logit per next token)")
    if token.mask_outside_topk is False:
        raise ValueError("token.mask_outside_topk: false is not FUDGE, which renormalises over the top-k "
                         "candidates only; leave it unset")


def build_decoder(method: Method | dict, members: dict[str, Member], *, reward: Callable | None = None,
                  reward_tokenizer=None, sampling: Sampling = Sampling(), max_new_tokens: int = 32, stop=(),
                  use_cache: bool = True, pair_small: bool = True, read_text: bool | None = None) -> Decoder:
    """A ``Decoder`` for a method, after checking that the models it needs are there and compatible
    (each tokenizer fits its model: ``tokenizer_fit.check_fits``).

    ``read_text``: whether the guiding models read the response as text in their own tokens; None
    (the default) decides per model, by whether its vocabulary differs from the guided model's.
    True takes the text path even for a shared vocabulary (to compare the two). The decoder sums the per-token
    KL from the frozen model only where that sum is the method's KL (``Method.kl_kind`` exact)."""
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
                                 "the guided model's top-k candidates: set token.top_k (the draw is then restricted to "
                                 "those top_k candidates)")
            _refuse_keeping_outside(token, members, "untuned")
            guides.append(TextImplicitGuide(token.w, top_k, guided.eos_token_id))
        else:
            guides.append(ImplicitGuide(token.w, top_k, bool(token.mask_outside_topk)))
    elif token.kind == "explicit":
        top_k = EXPLICIT_TOP_K if token.top_k is None else token.top_k
        if "value" in text:
            if not top_k:
                raise ValueError("token-level explicit guidance (VAS) across vocabularies scores the guided "
                                 "model's top-k candidates: token.top_k must be at least 1")
            _refuse_keeping_outside(token, members, "value")
            guides.append(TextExplicitGuide(token.beta, top_k, guided.eos_token_id))
        else:
            guides.append(ExplicitGuide(members["value"].model.head_kind, token.beta, top_k,
                                        bool(token.mask_outside_topk)))
    elif token.kind == "fudge":
        _check_fudge(token, members, "classifier" in text)
        guides.append(FudgeGuide(token.beta, EXPLICIT_TOP_K if token.top_k is None else token.top_k))
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
                   pair_small=pair_small, text_roles=text, measure_kl=method.kl_kind() == "exact")
