"""The counters behind ``bench/bench_step_proxies.py`` on toy steps whose answers are known, so that the
CPU proxies of issue 34 cannot rot unseen."""

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from proxy_counters import Tally, counting, model_regions, steps_at  # noqa: E402

ROWS, HEADS, T, HEAD_DIM = 3, 2, 5, 4


class CacheAppend(nn.Module):
    """A layer's cache append, as transformers' dynamic cache does it: one ``torch.cat`` on T."""

    def forward(self, input_ids, attention_mask=None, cache=None):
        new = torch.ones(ROWS, HEADS, input_ids.shape[1], HEAD_DIM)
        return torch.cat([cache, new], dim=-2)


class Steps:
    def append(self, x):
        return x


def run(step_fn, steps: int = 1, models=()) -> Tally:
    tally, owner = Tally(), Steps()
    with model_regions(tally, list(models)), steps_at(tally, owner, "append"), counting(tally):
        for _ in range(steps):
            owner.append(step_fn())
    return tally


def test_two_item_calls_and_one_cache_append_read_two_syncs_and_the_appended_bytes():
    model, cache = CacheAppend(), torch.zeros(ROWS, HEADS, T, HEAD_DIM)
    x = torch.arange(4.0)

    def step():
        x[0].item(), x[1].item()
        return model(input_ids=torch.zeros(ROWS, 1, dtype=torch.long), cache=cache)

    tally = run(step, models=[("guided", model)])
    [numbers] = tally.steps
    assert numbers["syncs"] == 2 and tally.sync_sites == {"outside the package": 2}
    assert numbers["cache_cat_bytes"] == ROWS * HEADS * (T + 1) * HEAD_DIM * 4  # float32


def test_each_kind_of_host_read_counts_once_and_reads_of_host_copies_not_at_all():
    x = torch.arange(6.0)
    reads = {  # name: (read, synchronisations)
        "bool()": (lambda: bool(x[0] > 1), 1),
        "int()": (lambda: int(x[2]), 1),
        "tolist": (lambda: x.tolist(), 1),
        "cpu, then numpy and tolist of the copy": (lambda: (lambda h: (h.numpy(), h.tolist(), h[1:].tolist()))(x.cpu()),
                                                   1),
        "the device tensor after a copy of it, and a sum with a copy": (lambda: (x.cpu(), x.tolist(),
                                                                                 (x + x.cpu()).tolist()), 4),
        "tensors made on the host": (lambda: (torch.tensor([1, 2]).tolist(), torch.from_numpy(np.ones(2)).tolist(),
                                             int(torch.arange(3).sum())), 0),
        "host tensors moved to the device": (lambda: (torch.tensor([1, 2], device="cpu").tolist(),
                                                     torch.tensor([1]).to("cpu").item()), 2),
        "nonzero": (lambda: x.nonzero(), 1),
        "boolean-mask index": (lambda: x[x > 2], 1),
        "boolean-mask assignment": (lambda: x.clone().__setitem__(x > 2, 0.0), 1),
        "boolean mask made on the host": (lambda: x[torch.tensor([True, False] * 3)], 0),
    }
    for name, (read, syncs) in reads.items():
        [numbers] = run(read).steps
        assert numbers.get("syncs", 0) == syncs, name
    rows = torch.zeros(ROWS, HEADS, T, HEAD_DIM)  # joining rows (dim 0) is no cache append
    [numbers] = run(lambda: (x[x.long()] * 2, x.sum(), torch.cat([x, x]), torch.cat([rows, rows]))).steps
    assert numbers.get("syncs", 0) == 0 and numbers.get("cache_cat_bytes", 0) == 0


class AddOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Identity()

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids + 1)


def test_operators_split_at_the_models_passes_and_pass_shapes_are_distinct_per_model():
    model, other = AddOne(), AddOne()
    widths = iter([3, 3, 4])

    def step():
        ids = torch.zeros(2, next(widths), dtype=torch.long)
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
        other(ids)
        return ids * 2 - 1

    tally = run(step, steps=3, models=[("guided", model), ("value", other)])
    assert [s["ops_in_models"] for s in tally.steps] == [2] * 3  # one add in each model
    assert [s["ops_outside"] for s in tally.steps] == [4] * 3  # zeros, ones_like, mul, sub
    assert tally.shapes == {"guided": {((2, 3), (2, 3)), ((2, 4), (2, 4))}, "value": {((2, 3), None), ((2, 4), None)}}
    assert all(0 <= s["model_seconds"] <= s["seconds"] for s in tally.steps)
