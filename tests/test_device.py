"""The decoders on the device that ``VALUEGUIDE_TEST_DEVICE`` names (default: the CPU; ``make gpu-check``
runs this module with ``cuda``): the paired small models in the device's half precision against the two
models run apart, and every cell of the method grid, and cross-vocabulary IVG, cached against uncached
with a fixed seed, in float32 on the device (caches that follow CBS row copies included)."""

import os

import pytest
import torch

from tests import test_decoding_cache as cache
from tests import test_text_stream as cross
from tests.helpers.toy_models import make_gpt2, make_mistral
from valueguide.decoding import Member, Sampling, build_decoder
from valueguide.decoding.paired import pair_models

DEVICE = os.environ.get("VALUEGUIDE_TEST_DEVICE", "cpu")
HALF = torch.bfloat16 if DEVICE.startswith("cuda") else torch.float32  # bf16 matmuls on a CPU crawl
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason=f"VALUEGUIDE_TEST_DEVICE={DEVICE} but torch sees no CUDA device")


def _on_device(models: dict) -> dict:
    return {role: Member(m.model.to(DEVICE), m.tokenizer, m.template, m.kind) for role, m in models.items()}


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_paired_small_models_in_half_precision_equal_the_two_models(arch):
    make = {"gpt2": lambda seed: make_gpt2(cache.V, seed=seed, n_layer=2),
            "mistral": lambda seed: make_mistral(cache.V, seed=seed, layers=2)}[arch]
    tuned, untuned = (make(seed).to(DEVICE, HALF) for seed in (2, 3))
    ids = torch.randint(2, cache.V, (3, 6), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expect = [m(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float() for m in (tuned, untuned)]
        paired = pair_models(tuned, untuned)
        cat = lambda t: torch.cat([t, t])  # noqa: E731
        got = paired(input_ids=cat(ids), attention_mask=cat(mask), position_ids=cat(pos)).logits.float()
    real = mask.bool()
    tolerance = 5e-2 if HALF == torch.bfloat16 else 1e-5  # bf16 keeps 8 bits of mantissa
    for half, want in enumerate(expect):
        torch.testing.assert_close(got[3 * half:3 * half + 3][real], want[real], atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("chunk", ["none", "implicit", "explicit", "gold"])
@pytest.mark.parametrize("token", list(cache.TOKEN_LEVEL))
def test_every_cell_of_the_grid_is_cache_exact_on_the_device(token, chunk):
    method = {}
    if cache.TOKEN_LEVEL[token]:
        method["token"] = cache.TOKEN_LEVEL[token]
    if chunk != "none":
        method["chunk"] = {"scorer": chunk, **cache.CBS}
    models = _on_device(cache.members("scalar" if token == "explicit-scalar" else "token"))
    cached, naive = cache.generate(method, models), cache.generate(method, models, use_cache=False)
    assert [g.ids for g in cached.generations] == [g.ids for g in naive.generations]


def test_ivg_across_the_papers_vocabularies_is_cache_exact_on_the_device():
    pair = "mistral<-llama2,gpt2"
    guided_tok = cross.PAIRS[pair][0]()
    models = _on_device(cross.members(pair, guided=make_mistral(len(guided_tok), seed=1, layers=2)))
    method = {"token": {"kind": "implicit", "w": 1.0, "top_k": 6}, "chunk": {"scorer": "explicit", "W": 2, "K": 2, "L": 3}}
    runs = [build_decoder(method, models, sampling=Sampling(1.0), max_new_tokens=12, use_cache=use_cache)
            .generate(cross.PROMPTS, torch.Generator().manual_seed(5)) for use_cache in (True, False)]
    assert [g.ids for g in runs[0].generations] == [g.ids for g in runs[1].generations]
