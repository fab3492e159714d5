"""The tuned/untuned pair run as one paired model computes exactly what the two models compute,
through KV caches, padding and row copies; models that cannot be paired are refused by name and
decoding falls back to running them one after the other."""

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM

from tests.helpers.toy_models import make_gpt2, make_mistral, make_tokenizer
from valueguide.decoding import Member, Sampling, build_decoder
from valueguide.decoding.paired import PairingError, pair_models

TOK = make_tokenizer()
V = len(TOK)
MAKERS = {"gpt2": lambda seed: make_gpt2(V, seed=seed, n_layer=2),
          "mistral": lambda seed: make_mistral(V, seed=seed, layers=2)}


def make_mixtral(seed: int):
    torch.manual_seed(seed)
    cfg = MixtralConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=1)
    return MixtralForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", list(MAKERS))
def test_paired_model_equals_both_models_through_a_padded_cached_pass(arch):
    tuned, untuned = MAKERS[arch](2), MAKERS[arch](3)
    ids = torch.randint(2, V, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    expect = [m(input_ids=ids, attention_mask=mask, position_ids=pos).logits for m in (tuned, untuned)]
    paired = pair_models(tuned, untuned)
    cat = lambda t: torch.cat([t, t])  # noqa: E731
    first = paired(input_ids=cat(ids[:, :4]), attention_mask=cat(mask[:, :4]), position_ids=cat(pos[:, :4]),
                   use_cache=True)
    rest = paired(input_ids=cat(ids[:, 4:]), attention_mask=cat(mask), position_ids=cat(pos[:, 4:]),
                  cache=first.past_key_values, use_cache=True)
    got = torch.cat([first.logits, rest.logits], 1)
    real = mask.bool()
    for half, want in enumerate(expect):
        assert torch.allclose(got[3 * half:3 * half + 3][real], want[real], atol=1e-5)
    # the separate models still compute the same, now from slices of the stacked weights
    assert torch.allclose(tuned(input_ids=ids, attention_mask=mask, position_ids=pos).logits, expect[0])
    activations = {type(m).__name__ for m in paired.modules()} & {"NewGELUActivation", "FusedTanhGELU"}
    assert activations == ({"FusedTanhGELU"} if arch == "gpt2" else set())  # GPT-2's in one fused operation


def test_pairing_does_not_copy_the_weights():
    tuned, untuned = make_gpt2(V, seed=2), make_gpt2(V, seed=3)
    paired = pair_models(tuned, untuned)
    stacked = {p.data_ptr() for p in paired.parameters()}
    assert tuned.transformer.wte.weight.untyped_storage().data_ptr() in stacked
    assert tuned.lm_head.weight is tuned.transformer.wte.weight  # the tie survives
    n = sum(p.numel() for p in paired.parameters())
    assert n == sum(p.numel() for p in tuned.parameters()) + sum(p.numel() for p in untuned.parameters())


@pytest.mark.parametrize("other, why", [
    (lambda: make_gpt2(V, seed=3, n_layer=3), "names or shapes"),
    (lambda: make_mistral(V, seed=3), "different classes"),
])
def test_pairs_that_differ_are_refused_by_name(other, why):
    with pytest.raises(PairingError, match=why):
        pair_models(make_gpt2(V, seed=2, n_layer=2), other())


def test_mixture_of_experts_is_refused_and_eft_falls_back_to_separate_models():
    with pytest.raises(PairingError, match="no paired version"):
        pair_models(make_mixtral(2), make_mixtral(3))
    models = {"guided": Member(make_gpt2(V, seed=1), TOK), "tuned": Member(make_mixtral(2), TOK),
              "untuned": Member(make_mixtral(3), TOK)}
    decoder = build_decoder({"token": {"kind": "implicit"}}, models, max_new_tokens=4)
    assert decoder.paired is None
    out = decoder.generate(["good"], torch.Generator().manual_seed(0)).generations[0]
    assert out.ids and (out.finished or len(out.ids) == 4)


@pytest.mark.parametrize("method", [
    {"token": {"kind": "implicit", "w": 1.5}},
    {"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "implicit", "W": 2, "K": 2, "L": 3}},
])
def test_paired_and_separate_small_models_generate_the_same_tokens_and_cost(method):
    def run(pair_small: bool):
        models = {"guided": Member(make_gpt2(V, seed=1, n_layer=2), TOK, "the film {prompt}"),
                  "tuned": Member(make_gpt2(V, seed=2), TOK, "{prompt} good"),
                  "untuned": Member(make_gpt2(V, seed=3), TOK, "{prompt} good")}
        decoder = build_decoder(method, models, sampling=Sampling(0.9), max_new_tokens=9, pair_small=pair_small)
        assert (decoder.paired is not None) == pair_small
        return decoder.generate(["good", "the bad a b c film", "h"], torch.Generator().manual_seed(0))

    paired, separate = run(True), run(False)
    assert [g.ids for g in paired.generations] == [g.ids for g in separate.generations]
    assert dict(paired.meter.passes) == dict(separate.meter.passes)
    assert dict(paired.meter.tokens) == dict(separate.meter.tokens)
