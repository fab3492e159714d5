"""Next-token distributions of every token-level method equal their formulas (docs/ALGORITHMS.md §4.2),
computed here from scratch: one unpadded, uncached pass per model on its own template of the prompt.
Prompts of different lengths are decoded together, so left padding and caches are exercised."""

import pytest
import torch

from tests.helpers.toy_models import make_gpt2, make_mistral, make_tokenizer
from valueguide.decoding import Decoder, ExplicitGuide, ImplicitGuide, Member, Sampling, build_decoder
from valueguide.decoding.sampler import _first_above, draw
from valueguide.value.model import ValueModel

TOK = make_tokenizer()
V = len(TOK)
TEMPLATES = {"guided": "the film {prompt}", "small": "{prompt} good", "value": "a {prompt} b"}
PROMPTS = ["good", "the bad a b c film"]
RESPONSES = [[4, 5, 1, 6], [7, 8, 9, 9]]


def value_model(head: str, seed: int = 7, n_positions: int = 256) -> ValueModel:
    vm = ValueModel(make_gpt2(V, seed=seed, n_layer=2, n_positions=n_positions).transformer, head,
                    {"template": TEMPLATES["value"]})
    torch.manual_seed(seed)
    torch.nn.init.normal_(vm.head.weight)
    torch.nn.init.normal_(vm.head.bias)
    return vm.eval()


def members(head: str = "token", guided=None, n_positions: int = 256) -> dict:
    return {"guided": Member(guided or make_gpt2(V, seed=1, n_layer=2), TOK, TEMPLATES["guided"]),
            "tuned": Member(make_gpt2(V, seed=2), TOK, TEMPLATES["small"]),
            "untuned": Member(make_gpt2(V, seed=3), TOK, TEMPLATES["small"]),
            "value": Member(value_model(head, n_positions=n_positions), TOK, kind="value")}


def scratch(member: Member, prompt: str, response: list[int], extra: list[int] = ()) -> torch.Tensor:
    """The output at the last position of one unpadded, uncached pass."""
    ids = torch.tensor([member.encode_prompt(prompt) + list(response) + list(extra)])
    with torch.no_grad():
        out = member.model(input_ids=ids)
    return (out.values if member.kind == "value" else out.logits)[0, -1].float()


def reference_probs(z: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """softmax(z/T) on the top-k logits, then the smallest nucleus of mass >= top_p (plain loops)."""
    p = torch.softmax(z.double() / temperature, -1)
    order = sorted(range(len(z)), key=lambda i: -float(z[i]))
    keep = set(order[:top_k]) if top_k else set(order)
    p = torch.tensor([float(p[i]) if i in keep else 0.0 for i in range(len(z))], dtype=torch.float64)
    p = p / p.sum()
    mass, nucleus = 0.0, set()
    for i in sorted(range(len(z)), key=lambda i: -float(p[i])):
        if mass >= top_p:
            break
        nucleus.add(i)
        mass += float(p[i])
    p = torch.tensor([float(p[i]) if i in nucleus else 0.0 for i in range(len(z))], dtype=torch.float64)
    return (p / p.sum()).float()


def decoded(method: dict, models: dict, sampling: Sampling) -> torch.Tensor:
    return build_decoder(method, models, sampling=sampling).next_token_probs(PROMPTS, RESPONSES)


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (3, 1.0), (0, 0.8), (5, 0.6)])
def test_base_sampling_is_tempered_top_k_top_p(top_k, top_p):
    models = members()
    got = decoded({}, models, Sampling(0.7, top_k, top_p))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        want = reference_probs(scratch(models["guided"], prompt, response), 0.7, top_k, top_p)
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_eft_is_large_logits_plus_w_times_small_log_ratio(arch):
    guided = make_mistral(V, seed=1, layers=2) if arch == "mistral" else None
    models = members(guided=guided)
    w, temperature = 0.6, 0.8
    got = decoded({"token": {"kind": "implicit", "w": w}}, models, Sampling(temperature))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        psi = (torch.log_softmax(scratch(models["tuned"], prompt, response), -1)
               - torch.log_softmax(scratch(models["untuned"], prompt, response), -1))
        z = scratch(models["guided"], prompt, response) + w * psi
        torch.testing.assert_close(got[i], reference_probs(z, temperature), atol=1e-5, rtol=0)


def vas_reference(models, head, prompt, response, beta, k, masked):
    z = scratch(models["guided"], prompt, response)
    cand = z.topk(k or V).indices
    if head == "token":
        q = scratch(models["value"], prompt, response)[cand]
    else:
        q = torch.stack([scratch(models["value"], prompt, response, [int(a)]) for a in cand])
    out = torch.full_like(z, float("-inf")) if masked else z.clone()
    out[cand] = z[cand] + beta * (q - q.mean())
    return out


@pytest.mark.parametrize("head", ["token", "scalar"])
@pytest.mark.parametrize("k,masked", [(4, False), (4, True), (0, False)])
def test_vas_adds_centred_values_on_the_top_k_of_the_large_model(head, k, masked):
    models = members(head)
    beta, temperature = 1.5, 0.7
    method = {"token": {"kind": "explicit", "beta": beta, "top_k": k, "mask_outside_topk": masked}}
    got = decoded(method, models, Sampling(temperature))
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        z = vas_reference(models, head, prompt, response, beta, k, masked)
        torch.testing.assert_close(got[i], reference_probs(z, temperature), atol=1e-5, rtol=0)
        if masked:
            assert int((got[i] > 0).sum()) == k


@pytest.mark.parametrize("head", ["token", "scalar"])
def test_vas_stays_exact_past_half_of_the_value_models_positions(head):
    """Prompt + response run well past n_positions / 2 of the value backbone."""
    models = members(head, n_positions=40)
    long = [[2 + (i * 7 + j) % 12 for i in range(24)] for j in range(2)]
    method = {"token": {"kind": "explicit", "beta": 2.0, "top_k": 6}}
    got = build_decoder(method, models, sampling=Sampling(1.0)).next_token_probs(PROMPTS, long)
    for i, prompt in enumerate(PROMPTS):
        assert len(models["value"].encode_prompt(prompt)) + 24 > 20
        z = vas_reference(models, head, prompt, long[i], 2.0, 6, False)
        torch.testing.assert_close(got[i], reference_probs(z, 1.0), atol=1e-5, rtol=0)


def test_greedy_and_draw_pick_only_allowed_tokens():
    p = Sampling(0.0).probs(torch.tensor([[0.1, 2.0, -1.0]]))
    assert p.tolist() == [[0.0, 1.0, 0.0]]
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]]).repeat(2000, 1)
    tokens = draw(probs, torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {1, 3}
    assert abs(float((tokens == 1).float().mean()) - 0.5) < 0.05


@pytest.mark.parametrize("block", [1, 3, 4, 16, 1024])
def test_draw_takes_the_first_token_whose_cumulative_mass_exceeds_the_uniform(block):
    """The two-level inverse CDF picks, for every row's uniform, the token the flat inverse CDF picks:
    masses are multiples of 1/64 so every sum is exact; whole blocks of zeros, rows whose mass ends
    in zeros and vocabularies that are no multiple of the block are among the rows."""
    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 4, (400, 13), generator=gen)
    counts[:, 4:12] *= (torch.rand(400, 1, generator=gen) < 0.5)  # zero runs longer than small blocks
    counts[:, -3:] *= (torch.rand(400, 1, generator=gen) < 0.5)  # trailing zeros
    counts[counts.sum(1) == 0, 1] = 1
    probs = counts.float() / 64
    tokens = draw(probs, torch.Generator().manual_seed(5), block=block)
    u = torch.rand(400, 1, generator=torch.Generator().manual_seed(5)).double()
    cdf = counts.double().cumsum(1) / 64
    expected = (cdf <= u * cdf[:, -1:]).sum(1)  # the first index whose cumulative mass exceeds u·total
    assert torch.equal(tokens, expected)
    assert bool((counts.gather(1, tokens[:, None]) > 0).all())


def test_rounding_past_the_last_entry_takes_the_last_token_of_positive_mass():
    weights = torch.tensor([[0.25, 0.0, 0.5, 0.0, 0.0]], dtype=torch.float64)
    cdf = weights.cumsum(-1)
    assert _first_above(cdf, torch.tensor([[0.75]], dtype=torch.float64), weights).item() == 2
    assert _first_above(cdf, torch.tensor([[0.3]], dtype=torch.float64), weights).item() == 2
    assert _first_above(cdf, torch.tensor([[0.1]], dtype=torch.float64), weights).item() == 0
    assert _first_above(cdf, torch.tensor([[0.25]], dtype=torch.float64), weights).item() == 2  # mass *exceeds* u


def test_guides_compose_eft_then_vas_on_the_large_models_top_k():
    models = members("token")
    decoder = Decoder(models, token_guides=[ImplicitGuide(0.5), ExplicitGuide("token", beta=2.0, top_k=4)],
                      sampling=Sampling(1.0))
    got = decoder.next_token_probs(PROMPTS, RESPONSES)
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        z = scratch(models["guided"], prompt, response)
        psi = (torch.log_softmax(scratch(models["tuned"], prompt, response), -1)
               - torch.log_softmax(scratch(models["untuned"], prompt, response), -1))
        cand = z.topk(4).indices
        q = scratch(models["value"], prompt, response)[cand]
        want = z + 0.5 * psi
        want[cand] += 2.0 * (q - q.mean())
        torch.testing.assert_close(got[i], reference_probs(want, 1.0), atol=1e-5, rtol=0)


def fudge_reference(models, prompt, response, beta, size):
    """z_L(a) + beta * log sigma(c(s, a)) on the ``size`` largest z_L(a), by hand; -inf elsewhere."""
    z = scratch(models["guided"], prompt, response)
    c = scratch(models["classifier"], prompt, response)
    out = torch.full_like(z, float("-inf"))
    for a in z.topk(size).indices.tolist():
        out[a] = z[a] + beta * torch.log(1 / (1 + torch.exp(-c[a])))
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("beta,k", [(1.0, 5), (2.5, 3), (1.0, None), (0.5, 0)])
def test_fudge_reweights_the_top_k_by_the_classifiers_probability_and_renormalises_there(beta, k, temperature):
    """FUDGE (docs/ALGORITHMS.md §4.2): p(a) ∝ (p_L(a) σ(c(s, a))^beta)^(1/T) on C = top-k(z_L), 0 outside
    (k unset: FUDGE's 20, here the whole toy vocabulary; 0: the whole vocabulary)."""
    models = {**members(), "classifier": Member(value_model("token", seed=11), TOK, TEMPLATES["small"], kind="value")}
    got = decoded({"token": {"kind": "fudge", "beta": beta, "top_k": k}}, models, Sampling(temperature))
    size = min(20 if k is None else k or V, V)
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
        z = fudge_reference(models, prompt, response, beta, size)
        torch.testing.assert_close(got[i], reference_probs(z, temperature), atol=1e-5, rtol=0)
        assert int((got[i] > 0).sum()) == size


def test_fudge_refuses_a_missing_classifier_one_without_a_token_head_and_keeping_tokens_outside_c():
    fudge = {"token": {"kind": "fudge"}}
    with pytest.raises(ValueError, match=r"needs models for \['classifier'\]"):
        build_decoder(fudge, members())
    with pytest.raises(ValueError, match="FUDGE's classifier .* needs a token head"):
        build_decoder(fudge, {**members(), "classifier": Member(value_model("scalar"), TOK, kind="value")})
    with pytest.raises(ValueError, match="mask_outside_topk: false is not FUDGE"):
        build_decoder({"token": {"kind": "fudge", "mask_outside_topk": False}},
                      {**members(), "classifier": Member(value_model("token"), TOK, kind="value")})
