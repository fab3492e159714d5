"""Pooled vocabularies: a compact model and its full-vocabulary expansion are one distribution."""

import math

import pytest
import torch

from valueguide.world import lm as lm_mod
from valueguide.world.pooled import Pooling, compact, compact_model, expand

VOCAB = 50
USED = [0, 3, 7, 8, 21, 40, 49]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral"])
def test_the_full_model_is_the_compact_distribution_with_the_pooled_mass_split_evenly(arch):
    pooling = Pooling.of([USED], VOCAB)
    spec = {"arch": arch, "layers": 1, "width": 16, "heads": 2}
    torch.manual_seed(0)
    small = compact_model(lambda v: lm_mod.make_lm(spec, v, 0, 0), pooling).eval()
    with torch.no_grad():  # move away from the start, so that nothing holds by construction
        for p in small.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    full = expand(small, lambda v: lm_mod.make_lm(spec, v, 0, 0), pooling).eval()
    assert full.get_output_embeddings().weight is full.get_input_embeddings().weight
    assert full.config.vocab_size == VOCAB

    real = torch.tensor([[3, 12, 40, 49, 30, 7]])  # 12 and 30 are unused: the pooled row in compact form
    compact_ids = torch.tensor(pooling.to_compact(real.tolist()))
    with torch.no_grad():
        p_small = torch.softmax(small(compact_ids).logits, -1)
        p_full = torch.softmax(full(real).logits, -1)
    unused = [i for i in range(VOCAB) if i not in USED]
    torch.testing.assert_close(p_full[..., USED], p_small[..., :len(USED)], atol=1e-5, rtol=1e-4)
    for i in unused:  # each unused token: the pooled probability over n_unused
        torch.testing.assert_close(p_full[..., i], p_small[..., len(USED)] / len(unused), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(p_full.sum(-1), torch.ones_like(p_full[..., 0]))

    back = compact(full, pooling).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(compact_ids).logits, small(compact_ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_start_leaves_the_unused_tokens_unlikely(arch):
    pooling = Pooling.of([USED], 5000)
    spec = {"arch": arch, "layers": 1, "width": 16, "heads": 2}
    model = compact_model(lambda v: lm_mod.make_lm(spec, v, 0, 0), pooling).eval()
    with torch.no_grad():
        pooled = torch.log_softmax(model(torch.tensor([[0, 1, 2]])).logits, -1)[..., len(USED)]
    assert pooled.max() < math.log(0.01)


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Pooling.of([[1, 60]], VOCAB)
