"""The KL from the frozen model (docs/ALGORITHMS.md §5.4), against brute force.

Per step: ``KL(p_method || p_ref)`` over the whole vocabulary equals its formula, computed here from
scratch (one uncached pass per model, plain loops for the sum), for plain sampling against a reference
model, EFT, VAS and EFT across vocabularies. Per sequence: on an enumerable world (3 words + EOS,
responses of at most 3 tokens) the per-token KLs summed along a response, averaged over every response
weighted by its probability under the method, equal the sequence KL computed by enumerating every
response; the sums the decoder returns are those per-step values summed along the returned rows, CBS row
copies and finished rows included. Best-of-N's analytic bound bounds its exact KL.
"""

import math

import pytest
import torch

from tests.test_decoding_distributions import PROMPTS, RESPONSES, TEMPLATES, TOK, V, members, reference_probs, \
    scratch, vas_reference
from tests.test_decoding_toys import TableScorer, TabularLM, best_of_n_probs, random_logits, responses, tokenizer
from tests.helpers.toy_models import make_gpt2, make_tokenizer
from valueguide.decoding import Decoder, ImplicitGuide, Member, Method, Sampling, Search, build_decoder
from valueguide.decoding.tokenizer_fit import VocabularyMismatch


def brute_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """``sum_a p(a) log(p(a) / q(a))`` term by term: 0 where p is 0, infinite where q alone is."""
    total = 0.0
    for pa, qa in zip(p.double().tolist(), q.double().tolist()):
        if pa > 0:
            total += math.inf if qa == 0 else pa * math.log(pa / qa)
    return total


def assert_kl(got: float, want: float, tol: float = 1e-5) -> None:
    assert (math.isinf(got) and math.isinf(want)) or abs(got - want) < tol, (got, want)


def sampling_kl(sampling: Sampling, logits: list, frozen: list) -> float:
    z = torch.tensor([logits])
    return sampling.kl(sampling.probs(z), z, torch.tensor([frozen])).item()


def test_sampling_kl_adds_nothing_where_p_is_zero_and_is_infinite_where_q_alone_is():
    inf, log2 = float("inf"), math.log(2)
    plain = Sampling(1.0)
    assert sampling_kl(plain, [0.0, 0.0, -inf], [0.0, 0.0, log2]) == pytest.approx(log2)  # p: 1/2, 1/2, 0
    assert sampling_kl(plain, [0.0, 0.0, log2], [0.0, 0.0, log2]) == 0.0
    # a wider q keeps its own mass past p's width; past a narrower q's width, q is 0
    assert sampling_kl(plain, [0.0, 0.0], [0.0, 0.0, log2]) == pytest.approx(log2)
    assert sampling_kl(plain, [0.0, 0.0, 0.0], [0.0, 0.0]) == inf
    # the same top-k, top-p and temperature on both sides: supports that differ make it infinite
    assert sampling_kl(Sampling(1.0, 2), [2.0, 1.0, 0.0], [2.0, 0.0, 1.0]) == inf
    assert sampling_kl(Sampling(0.5, 2), [2.0, 1.0, 0.0], [1.0, 2.0, 0.0]) == pytest.approx(
        brute_kl(torch.tensor([0.5 + 0.5 * math.tanh(1.0), 0.5 - 0.5 * math.tanh(1.0)]),
                 torch.tensor([0.5 - 0.5 * math.tanh(1.0), 0.5 + 0.5 * math.tanh(1.0)])))
    assert sampling_kl(Sampling(1.0, 0, 0.5), [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]) == inf
    assert sampling_kl(Sampling(0.0), [1.0, 0.0], [2.0, 0.0]) == 0.0
    assert sampling_kl(Sampling(0.0), [1.0, 0.0], [0.0, 2.0]) == inf


# --- per step, against the formulas of docs/ALGORITHMS.md §4.2 ----------------------------------------------

SAMPLINGS = [(0.7, 0, 1.0), (0.7, 3, 1.0), (1.0, 0, 0.8)]


def kls(decoder) -> list[float]:
    return decoder.next_token_kl(PROMPTS, RESPONSES).tolist()


@pytest.mark.parametrize("temperature,top_k,top_p", SAMPLINGS)
def test_plain_sampling_with_a_reference_measures_the_kl_from_the_reference(temperature, top_k, top_p):
    models = members()
    sampling = Sampling(temperature, top_k, top_p)
    models["reference"] = Member(make_gpt2(V, seed=9, n_layer=2), TOK, TEMPLATES["guided"])
    got = kls(build_decoder({}, models, sampling=sampling))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        p = reference_probs(scratch(models["guided"], prompt, response), temperature, top_k, top_p)
        q = reference_probs(scratch(models["reference"], prompt, response), temperature, top_k, top_p)
        assert_kl(got[i], brute_kl(p, q))
    itself = {**models, "reference": Member(models["guided"].model, TOK, TEMPLATES["guided"])}
    assert kls(build_decoder({}, itself, sampling=sampling)) == [0.0, 0.0]
    assert kls(build_decoder({}, members(), sampling=sampling)) == [0.0, 0.0]  # no reference: the guided model


@pytest.mark.parametrize("temperature,top_k,top_p", SAMPLINGS)
def test_eft_kl_is_from_the_guided_models_own_distribution(temperature, top_k, top_p):
    models, w = members(), 0.6
    got = kls(build_decoder({"token": {"kind": "implicit", "w": w}}, models,
                            sampling=Sampling(temperature, top_k, top_p)))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        z = scratch(models["guided"], prompt, response)
        psi = (torch.log_softmax(scratch(models["tuned"], prompt, response), -1)
               - torch.log_softmax(scratch(models["untuned"], prompt, response), -1))
        p = reference_probs(z + w * psi, temperature, top_k, top_p)
        assert_kl(got[i], brute_kl(p, reference_probs(z, temperature, top_k, top_p)))
        assert got[i] > 0


@pytest.mark.parametrize("head", ["token", "scalar"])
@pytest.mark.parametrize("k,masked,top_k", [(4, False, 0), (4, True, 0), (4, True, 6), (0, False, 0)])
def test_vas_kl_is_from_the_guided_models_own_distribution(head, k, masked, top_k):
    """Masked outside C, p is 0 there and adds nothing; Sampling's top-k acts on both sides."""
    models, beta, temperature = members(head), 1.5, 0.7
    method = {"token": {"kind": "explicit", "beta": beta, "top_k": k, "mask_outside_topk": masked}}
    got = kls(build_decoder(method, models, sampling=Sampling(temperature, top_k)))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        p = reference_probs(vas_reference(models, head, prompt, response, beta, k, masked), temperature, top_k)
        q = reference_probs(scratch(models["guided"], prompt, response), temperature, top_k)
        assert_kl(got[i], brute_kl(p, q))
        assert 0 < got[i] < math.inf


def test_a_guided_token_outside_the_references_top_k_makes_the_kl_infinite():
    """Sampling's top-k on the guided logits may keep a token the frozen model's top-k drops: the KL is
    then infinite, and is reported so."""
    models = members("token")
    method = {"token": {"kind": "explicit", "beta": 50.0, "top_k": 0}}
    got = kls(build_decoder(method, models, sampling=Sampling(1.0, 2)))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        p = reference_probs(vas_reference(models, "token", prompt, response, 50.0, 0, False), 1.0, 2)
        q = reference_probs(scratch(models["guided"], prompt, response), 1.0, 2)
        assert brute_kl(p, q) == math.inf and got[i] == math.inf


def test_cross_vocabulary_eft_kl_is_from_the_guided_models_own_distribution():
    from tests.test_text_stream import PROMPTS as TEXT_PROMPTS, guided_logits, members as text_members, \
        responses_for, text_eft_logits

    models, w, k, temperature = text_members("bpe->spm"), 0.7, 6, 0.9
    responses = responses_for(models["guided"].tokenizer)
    decoder = build_decoder({"token": {"kind": "implicit", "w": w, "top_k": k}}, models, sampling=Sampling(temperature))
    assert decoder.text_roles == {"tuned", "untuned"}
    got = decoder.next_token_kl(TEXT_PROMPTS, responses).tolist()
    for i, (prompt, response) in enumerate(zip(TEXT_PROMPTS, responses)):
        p = reference_probs(text_eft_logits(models, prompt, response, w, k), temperature)
        q = reference_probs(guided_logits(models, prompt, response), temperature)
        assert_kl(got[i], brute_kl(p, q))


def test_a_reference_with_another_tokenizer_is_refused_and_its_passes_are_no_cost():
    models = members()
    models["reference"] = Member(make_gpt2(V, seed=9), make_tokenizer(["x", "y", *"abcdefghij"]), "{prompt}")
    with pytest.raises(VocabularyMismatch, match="reference model .* must share the guided model's tokenizer"):
        build_decoder({}, models)
    plain = {"guided": members()["guided"]}
    with_reference = {**plain, "reference": Member(make_gpt2(V, seed=9), TOK, TEMPLATES["guided"])}
    runs = [build_decoder({}, m, sampling=Sampling(0.7), max_new_tokens=6).generate(PROMPTS, torch.Generator().manual_seed(0))
            for m in (plain, with_reference)]
    assert [g.ids for g in runs[0].generations] == [g.ids for g in runs[1].generations]
    assert runs[1].meter.passes == runs[0].meter.passes and runs[1].meter.tokens == runs[0].meter.tokens
    assert all(g.kl > 0 for g in runs[1].generations) and all(g.kl == 0 for g in runs[0].generations)


# --- whole responses on an enumerable world -------------------------------------------------------------

WTOK = tokenizer()
WV = len(WTOK)
PROMPT, PROMPT_IDS = "a", (2,)
MAX_LEN, T = 3, 0.8


def table(seed: int):
    return lambda prefix: random_logits(prefix, seed=seed, vocab=WV)


def eft_table(prefix: tuple, w: float = 1.5) -> torch.Tensor:
    """EFT's guided logits (§4.2) from the tables themselves."""
    psi = torch.log_softmax(table(2)(prefix), -1) - torch.log_softmax(table(3)(prefix), -1)
    return table(1)(prefix) + w * psi


def sequence_prob(logits_fn, response: tuple) -> float:
    """Probability of a whole response when each token is drawn from ``softmax(logits / T)``."""
    logp, prefix = 0.0, PROMPT_IDS
    for token in response:
        logp += float(torch.log_softmax(logits_fn(prefix).double() / T, -1)[token])
        prefix += (token,)
    return math.exp(logp)


def per_token_sums(decoder) -> dict:
    """Every response -> the decoder's per-step KLs summed along it (one call per distinct prefix)."""
    steps = {}

    def step(prefix: tuple) -> float:
        if prefix not in steps:
            steps[prefix] = decoder.next_token_kl([PROMPT], [list(prefix)]).item()
        return steps[prefix]

    return {y: sum(step(y[:t]) for t in range(len(y))) for y in responses(MAX_LEN)}


WORLDS = {  # name: (members, the method's per-token logits, the reference's)
    "eft": (lambda: {"guided": Member(TabularLM(WV, table(1)), WTOK), "tuned": Member(TabularLM(WV, table(2)), WTOK),
                     "untuned": Member(TabularLM(WV, table(3)), WTOK)}, eft_table, table(1)),
    "reference": (lambda: {"guided": Member(TabularLM(WV, table(1)), WTOK),
                           "reference": Member(TabularLM(WV, table(4)), WTOK)}, table(1), table(4)),
}


@pytest.mark.parametrize("world", list(WORLDS))
def test_per_token_kl_summed_along_responses_averages_to_the_exact_sequence_kl(world):
    make, method_logits, reference_logits = WORLDS[world]
    method = {"token": {"kind": "implicit", "w": 1.5}} if world == "eft" else {}
    decoder = build_decoder(method, make(), sampling=Sampling(T), max_new_tokens=MAX_LEN)
    p = {y: sequence_prob(method_logits, y) for y in responses(MAX_LEN)}
    q = {y: sequence_prob(reference_logits, y) for y in responses(MAX_LEN)}
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-12)  # every response is enumerated
    exact = sum(p[y] * math.log(p[y] / q[y]) for y in p)
    sums = per_token_sums(decoder)
    assert sum(p[y] * sums[y] for y in p) == pytest.approx(exact, rel=1e-6, abs=1e-9)
    assert exact > 0.05
    # the decoder's own sums are these, and their sample mean estimates the sequence KL
    generations = decoder.generate([PROMPT] * 3000, torch.Generator().manual_seed(0)).generations
    for g in generations:
        assert g.kl == pytest.approx(sums[tuple(g.ids)], abs=1e-9)
    values = torch.tensor([g.kl for g in generations], dtype=torch.float64)
    assert abs(values.mean().item() - exact) < 4 * values.std().item() / math.sqrt(len(values))


def test_a_model_against_itself_as_reference_has_kl_zero():
    models = {"guided": Member(TabularLM(WV, table(1)), WTOK), "reference": Member(TabularLM(WV, table(1)), WTOK)}
    decoder = build_decoder({}, models, sampling=Sampling(T), max_new_tokens=MAX_LEN)
    assert set(per_token_sums(decoder).values()) == {0.0}
    assert {g.kl for g in decoder.generate([PROMPT] * 8, torch.Generator().manual_seed(0)).generations} == {0.0}


@pytest.mark.parametrize("W,K,L", [(2, 3, 1), (1, 4, 2)])
def test_cbs_row_copies_carry_the_sums_of_the_rows_they_copy(W, K, L):
    """Rows copied after every chunk keep their parent's sum; finished rows add nothing."""
    models = {"guided": Member(TabularLM(WV, table(5)), WTOK), "tuned": Member(TabularLM(WV, table(2)), WTOK),
              "untuned": Member(TabularLM(WV, table(3)), WTOK)}
    scorer = TableScorer(lambda y: float(sum(y)) / 7 + 0.3 * len(y))
    decoder = Decoder(models, token_guides=[ImplicitGuide(1.0)], scorer=scorer, search=Search(W, K, L),
                      sampling=Sampling(T), max_new_tokens=5)
    prompts = ["a", "b c", "c", "a a b"]
    out = decoder.generate(prompts, torch.Generator().manual_seed(3)).generations
    assert len(scorer.calls) > 2 and any(g.finished and len(g.ids) < 5 for g in out)
    for prompt, g in zip(prompts, out):
        along = sum(decoder.next_token_kl([prompt], [g.ids[:t]]).item() for t in range(len(g.ids)))
        assert g.kl == pytest.approx(along, abs=1e-9) and g.kl > 0


# --- how each method's KL is known ------------------------------------------------------------------------


@pytest.mark.parametrize("config,kind", [
    ({}, "exact"),
    ({"token": {"kind": "implicit"}}, "exact"),
    ({"token": {"kind": "explicit"}, "chunk": {"scorer": "explicit", "W": 1, "K": 1, "L": 4}}, "exact"),
    ({"chunk": {"scorer": "explicit", "W": 1, "K": 16}}, "upper_bound"),
    ({"chunk": {"scorer": "gold", "W": 1, "K": 4}}, "upper_bound"),
    ({"finetuned": "dpo"}, "exact"),  # a tuned copy sampled plainly: measured against the frozen reference
    ({"finetuned": "dpo", "chunk": {"scorer": "gold", "W": 1, "K": 4}}, "undefined"),  # the bound is from the copy
    ({"token": {"kind": "implicit"}, "chunk": {"scorer": "explicit", "W": 1, "K": 4}}, "undefined"),
    ({"chunk": {"scorer": "explicit", "W": 1, "K": 4, "L": 5}}, "undefined"),
    ({"chunk": {"scorer": "explicit", "W": 4, "K": 4, "L": 5}}, "undefined"),
])
def test_kl_kind_says_how_each_methods_kl_is_known(config, kind):
    method = Method.from_config(config)
    assert method.kl_kind() == kind
    assert (method.kl_bound() is not None) == (kind == "upper_bound")


@pytest.mark.parametrize("n", [2, 3, 4, 16, 128])
def test_best_of_n_bound_bounds_its_exact_kl_and_is_reached_with_many_outcomes(n):
    bound = Method.from_config({"chunk": {"scorer": "gold", "W": 1, "K": n}}).kl_bound()
    assert bound == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-15)

    def exact(base: dict, reward: dict) -> float:
        best = best_of_n_probs(base, reward, n)
        return sum(p * math.log(p / base[y]) for y, p in best.items() if p > 0)

    world = {y: sequence_prob(table(1), y) for y in responses(MAX_LEN)}
    assert exact(world, {y: math.sin(7 * i) for i, y in enumerate(world)}) <= bound
    many = {i: 1 / 20000 for i in range(20000)}  # distinct rewards, no outcome likely: the bound is reached
    assert bound - 1e-5 < exact(many, {i: i for i in many}) <= bound
