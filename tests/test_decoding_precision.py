"""Scores stay exact on long responses: ``R`` and ``psi`` against float64 brute force at ~2,000 tokens.

``R`` sums one log-probability per response token, so ``|R|`` grows with the response (thousands of
nats at 2,000 tokens) while ``psi = R(u + a) - R(u)`` and a chunk's implicit score ``R_tuned -
R_untuned`` stay of order one. Summed in float32, ``R`` is rounded to ``|R| * 6e-8`` at every step,
so ``psi`` would be off by ~1e-3 nats; the references here sum in float64, and the scores must agree
to 1e-5 nats. ``psi`` is checked against float64 models too (the positions it differs at are few).
A chunk's score sums every position, so its reference takes each log-probability as the float32
model computes it (as the stream does) and checks the sum: the rounding of 2,000 float32
log-probabilities themselves (~5e-6 nats at random) is the model's precision, not the sum's.
"""

import copy

import torch

from tests.helpers.toy_models import make_gpt2, make_tokenizer
from tests.helpers.toy_tokenizers import byte_bpe, corpus, sentencepiece_bpe
from tests.test_decoding_toys import TabularLM
from tests.test_detokenize import candidate_text
from tests.test_text_stream import PROMPTS, TEMPLATES, own_tokens
from valueguide.decoding import Member, build_decoder
from valueguide.decoding.scorers import ImplicitScorer, TextImplicitScorer
from valueguide.decoding.detokenize import REPLACEMENT
from valueguide.texts import decode

TOKENS = 2000  # response tokens in the guiding pair's vocabulary
TOLERANCE = 1e-5  # nats


def long_response(guided_tok, small_tok) -> list[int]:
    """Guided token ids of corpus text whose tokenisation by ``small_tok`` is about ``TOKENS`` long."""
    ids = guided_tok(" " + " ".join(corpus(2000, seed=1)), add_special_tokens=False).input_ids
    lo, hi = 1, len(ids)
    while lo < hi:  # the shortest prefix that reaches TOKENS small tokens
        mid = (lo + hi) // 2
        if len(small_tok(decode(guided_tok, ids[:mid]), add_special_tokens=False).input_ids) < TOKENS:
            lo = mid + 1
        else:
            hi = mid
    while decode(guided_tok, ids[:lo]).endswith(REPLACEMENT):  # end on a whole character
        lo += 1
    return ids[:lo]


def in_float64(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), -1)


def as_text_streams(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities as ``aligned.Feed`` computes them (float32), for a float64 sum."""
    return torch.log_softmax(logits.float(), -1).double()


def as_streams(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities as ``streams.Stream`` computes them (float32), for a float64 sum."""
    logits = logits.float()
    return (logits - torch.logsumexp(logits, -1, keepdim=True)).double()


def R64(models: dict, prompt: str, text: str, eos: bool = False, logprobs=in_float64) -> float:
    """``R`` of ``text`` read in the pair's tokens, by brute force (``R64_of``)."""
    return R64_of(models, *own_tokens(models["untuned"], prompt, text, eos), logprobs)


@torch.no_grad()
def R64_of(models: dict, ids: list[int], b: int, logprobs=in_float64) -> float:
    """``R`` of the tokens of ``ids`` from ``b`` on, one pass per model, summed in float64."""
    at, nxt = torch.arange(max(b, 1) - 1, len(ids) - 1), torch.tensor(ids[max(b, 1):])
    total = 0.0
    for role, sign in (("tuned", 1.0), ("untuned", -1.0)):
        logp = logprobs(models[role].model(input_ids=torch.tensor([ids])).logits[0])
        total += sign * float(logp[at, nxt].sum())
    return total


def test_psi_across_vocabularies_is_exact_at_two_thousand_tokens():
    """``psi`` of every candidate against float64 models and sums, read off a response of 2,000 small
    tokens (|R| of each model ~ 10^4 nats)."""
    guided_tok, small = byte_bpe(), sentencepiece_bpe()
    response = long_response(guided_tok, small)
    positions = TOKENS + 64
    models = {"guided": Member(make_gpt2(len(guided_tok), seed=1, n_positions=len(response) + 64), guided_tok,
                               TEMPLATES["guided"]),
              "tuned": Member(make_gpt2(len(small), seed=2, n_positions=positions), small, TEMPLATES["small"]),
              "untuned": Member(make_gpt2(len(small), seed=3, n_positions=positions), small, TEMPLATES["small"])}
    k = 6
    decoder = build_decoder({"token": {"kind": "implicit", "w": 1.0, "top_k": k}}, models)
    rows = decoder._start(PROMPTS[:1], 1)
    rows.set_responses([response])
    candidates = rows.last("guided").topk(k).indices
    after, now = rows.streams["tuned"].candidate_scores(rows, candidates, guided_tok.eos_token_id)
    psi = (after["tuned"] - after["untuned"]) - (now["tuned"] - now["untuned"])[:, None]
    exact = {role: Member(copy.deepcopy(models[role].model).double(), small, TEMPLATES["small"])
             for role in ("tuned", "untuned")}
    u = decode(guided_tok, response)
    assert len(own_tokens(exact["untuned"], PROMPTS[0], u, False)[0]) >= TOKENS
    before = R64(exact, PROMPTS[0], u)
    want = [R64(exact, PROMPTS[0], u, eos=True) - before if a == guided_tok.eos_token_id
            else R64(exact, PROMPTS[0], candidate_text(guided_tok, response, a)) - before
            for a in candidates[0].tolist()]
    error = (psi[0].double() - torch.tensor(want, dtype=torch.float64)).abs().max()
    assert float(error) < TOLERANCE, (psi[0], want)


def tabular_pair(vocab: int) -> tuple[TabularLM, TabularLM]:
    """Two LMs whose logits depend on the last token alone: a forward pass adds no rounding of its
    own, so a score's error is that of its sum."""
    tables = [torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2 for seed in (11, 12)]
    return tuple(TabularLM(vocab, lambda prefix, table=table: table[prefix[-1]].clone()) for table in tables)


def implicit_score(models: dict, scorer_kind, response: list[int]) -> float:
    decoder = build_decoder({"chunk": {"scorer": "implicit", "W": 1, "K": 2, "L": None}}, models)
    assert isinstance(decoder.scorer, scorer_kind)
    rows = decoder._start(PROMPTS[:1], 1)
    rows.set_responses([response])
    return float(decoder.scorer.score(rows)[0])


def test_a_chunks_implicit_score_is_exact_at_two_thousand_tokens():
    """The chunk scorer's ``R_tuned - R_untuned``, summed as the shared vocabulary's streams run it
    (blocks of 256 tokens) and as the text path reads it, against float64 sums."""
    tok = make_tokenizer()
    words = [2 + (i * 7919 % 97) % (len(tok) - 2) for i in range(TOKENS)]
    tuned, untuned = tabular_pair(len(tok))
    shared = {"guided": Member(make_gpt2(len(tok), seed=1, n_positions=TOKENS + 64), tok, "{prompt}"),
              "tuned": Member(tuned, tok, "{prompt}"), "untuned": Member(untuned, tok, "{prompt}")}
    prompt = shared["tuned"].encode_prompt(PROMPTS[0])
    want = R64_of(shared, prompt + words, len(prompt), as_streams)
    assert abs(implicit_score(shared, ImplicitScorer, words) - want) < TOLERANCE

    guided_tok, small = byte_bpe(), sentencepiece_bpe()
    response = long_response(guided_tok, small)
    tuned, untuned = tabular_pair(len(small))
    across = {"guided": Member(make_gpt2(len(guided_tok), seed=1, n_positions=len(response) + 64), guided_tok,
                               TEMPLATES["guided"]),
              "tuned": Member(tuned, small, TEMPLATES["small"]), "untuned": Member(untuned, small, TEMPLATES["small"])}
    want = R64(across, PROMPTS[0], decode(guided_tok, response), logprobs=as_text_streams)
    assert abs(implicit_score(across, TextImplicitScorer, response) - want) < TOLERANCE
