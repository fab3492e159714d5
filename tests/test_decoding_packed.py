"""GPT-2 run on the real slots of a padded pass (``decoding.packed``) computes, at every real slot,
what transformers' GPT-2 computes there, for one model and for a tuned/untuned pair, with tree masks
and with 2D masks over a cache; models it does not compute exactly are left to transformers."""

import copy

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2Model

from tests.helpers.toy_models import make_gpt2, make_mistral
from valueguide.decoding.aligned import Feed
from valueguide.decoding.packed import packed_gpt2, spread
from valueguide.decoding.paired import pair_models
from valueguide.decoding.streams import LM, VALUE
from valueguide.value.model import ValueModel

V = 40
ROWS, PREFIX, WIDTH = 3, 5, 6


@torch.no_grad()
def _prefix_cache(transformer, copies: int, gen: torch.Generator):
    """A cache holding a left-padded prefix of ``ROWS`` rows (tiled over the copies) and its 2D mask."""
    ids = torch.randint(0, V, (ROWS, PREFIX), generator=gen).repeat(copies, 1)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=transformer.config)
    transformer(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    return cache, mask.bool()


def _pass(copies: int, live: torch.Tensor, gen: torch.Generator):
    """A padded pass: ids, positions, which slots are real (the same in every copy) and a tree mask
    in which real queries see some live cache columns and some earlier real slots, never padding."""
    ids = torch.randint(0, V, (ROWS, WIDTH), generator=gen).repeat(copies, 1)
    real = (torch.rand(ROWS, WIDTH, generator=gen) < 0.6)
    real[:, 0] = True
    real[-1] = False  # a row with nothing to feed
    real = real.repeat(copies, 1)
    pos = PREFIX + torch.randint(0, 4, (ROWS, WIDTH), generator=gen).repeat(copies, 1)
    sees_cache = live & (torch.rand(ROWS, PREFIX, generator=gen) < 0.8).repeat(copies, 1)
    sees_new = (torch.rand(ROWS, WIDTH, WIDTH, generator=gen) < 0.5).tril().repeat(copies, 1, 1) & real[:, None, :]
    allowed = torch.cat([sees_cache[:, None, :].expand(-1, WIDTH, -1), sees_new], 2)
    allowed[:, torch.arange(WIDTH), PREFIX + torch.arange(WIDTH)] = True  # every query sees itself
    return ids, pos, real, allowed[:, None]


def _models(paired: bool):
    if paired:
        pair = pair_models(make_gpt2(V, seed=2, n_layer=2), make_gpt2(V, seed=3, n_layer=2))
        return pair.transformer, 2
    return make_gpt2(V, seed=4, n_layer=2).transformer, 1


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("mask_kind", ["tree", "2d"])
@torch.no_grad()
def test_packed_gpt2_computes_what_transformers_computes_at_every_real_slot(paired, mask_kind):
    transformer, copies = _models(paired)
    packed = packed_gpt2(transformer, copies)
    assert packed is not None
    gen = torch.Generator().manual_seed(0)
    for trial in range(4):
        cache, live = _prefix_cache(transformer, copies, gen)
        ids, pos, real, tree = _pass(copies, live, gen)
        mask = tree if mask_kind == "tree" else torch.cat([live, real], 1)
        hf_cache = copy.deepcopy(cache)
        want = transformer(input_ids=ids, attention_mask=mask, position_ids=pos, cache=hf_cache,
                           use_cache=True).last_hidden_state
        hidden, flat = packed(ids, mask, pos, cache, real)
        got = spread(hidden, flat, *ids.shape)
        assert hidden.shape[:2] == (copies, int(real[:ROWS].sum()))
        assert torch.allclose(got[real], want[real], atol=1e-5, rtol=0)
        assert (got[~real] == 0).all()
        for layer, hf_layer in zip(cache.layers, hf_cache.layers):  # the cache: real slots as HF's, padding zero
            new_keys = layer.keys[:, :, PREFIX:].transpose(1, 2)
            assert torch.allclose(new_keys[real], hf_layer.keys[:, :, PREFIX:].transpose(1, 2)[real], atol=1e-5)
            assert (new_keys[~real] == 0).all()
            assert torch.equal(layer.keys[:, :, :PREFIX], hf_layer.keys[:, :, :PREFIX])


def test_feeds_of_gpt2_pairs_and_value_models_run_packed_and_others_do_not():
    pair = pair_models(make_gpt2(V, seed=2), make_gpt2(V, seed=3))
    assert Feed(pair, LM, copies=2)._packed is not None
    assert Feed(make_gpt2(V, seed=2), LM)._packed is not None
    value = ValueModel(make_gpt2(V, seed=2).transformer, "scalar")
    assert Feed(value, VALUE)._packed is not None
    assert Feed(make_mistral(V), LM)._packed is None


@pytest.mark.parametrize("change", [
    {"attn_implementation": "eager"},
    {"scale_attn_by_inverse_layer_idx": True},
    {"scale_attn_weights": False},
])
def test_gpt2_configured_beyond_what_packing_computes_is_left_to_transformers(change):
    attn = change.get("attn_implementation", "sdpa")
    config = GPT2Config(vocab_size=V, n_embd=16, n_layer=1, n_head=2,
                        **{k: v for k, v in change.items() if k != "attn_implementation"})
    model = GPT2Model._from_config(config, attn_implementation=attn).eval()
    assert packed_gpt2(model, 1) is None


@torch.no_grad()
def test_a_value_model_fed_packed_scores_as_its_own_forward():
    """The packed path of a value model applies its head as ``ValueModel.forward`` does."""
    for head in ("scalar", "token"):
        value = ValueModel(make_gpt2(V, seed=5, n_layer=2).transformer, head)
        torch.nn.init.normal_(value.head.weight, generator=torch.Generator().manual_seed(1))
        gen = torch.Generator().manual_seed(2)
        cache, live = _prefix_cache(value.backbone, 1, gen)
        ids, pos, real, tree = _pass(1, live, gen)
        feed = Feed(value, VALUE)
        feed.cache = copy.deepcopy(cache)
        got = feed._forward(ids, tree, pos, read=real)
        want = value(input_ids=ids, attention_mask=tree, position_ids=pos, past_key_values=cache,
                     use_cache=True, read=real).values
        assert got.shape == want.shape
        assert torch.allclose(got[real], want[real], atol=1e-5, rtol=0)
