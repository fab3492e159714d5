"""CPU proxies of a decoding step's GPU cost: host synchronisations, dispatched operators inside and
outside the models' passes, time outside the models, bytes of caches rewritten by ``torch.cat``,
and the distinct shapes each model's passes take (issue 34, item 5). A diagnostic for the
benchmarks.

On a CPU "device" and "host" are one, so a synchronisation is defined by what would synchronise on
CUDA when the decoder's tensors live on the device (``SYNCS``). Tensors made without a device
(``torch.tensor(...)``, ``torch.from_numpy``), those a counted host copy returned, and what
operators compute from host tensors alone (0-dim scalars apart), are host tensors: reading them is
no synchronisation (``x.cpu().numpy()`` counts once). Host-to-device copies are not counted.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections import Counter
from contextlib import ExitStack, contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# What synchronises on CUDA, and why. Tensor methods are seen as called (TorchFunctionMode); operators
# as dispatched (TorchDispatchMode): a boolean-mask index runs nonzero inside its kernel, counted once.
SYNCS = {
    "Tensor.item / bool() / int() / float() / index()": "reads one value to the host",
    "Tensor.tolist / Tensor.numpy / Tensor.cpu": "copies device data to the host",
    "aten.nonzero, masked_select, unique, repeat_interleave(tensor)": "output size depends on the data",
    "aten.index / index_put_ with a boolean index on the device": "boolean-mask indexing runs nonzero",
    "(not) any of these on a host tensor": "made without a device, a host copy, or computed from those",
}
HOST_READS = frozenset({torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
                        torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu})
SIZED_BY_DATA = frozenset({aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
                           aten.unique_dim.default, aten.unique_consecutive.default, aten.repeat_interleave.Tensor})
MASK_INDEXED = frozenset({aten.index.Tensor, aten.index_put_.default, aten.index_put.default})
CONSTRUCTORS = frozenset(_device_constructors())  # torch.tensor, zeros, arange, ...: they take a device


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class _HostTensors:
    """Tensors known to be on the host, held weakly and compared by identity (not by ``==``)."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        self._refs[id(t)] = weakref.ref(t, lambda _, key=id(t): self._refs.pop(key, None))

    def discard(self, t: torch.Tensor) -> None:
        self._refs.pop(id(t), None)

    def __contains__(self, t: torch.Tensor) -> bool:
        ref = self._refs.get(id(t))
        return ref is not None and ref() is t


def _package_site() -> str:
    """Where the caller's call stack last ran the package's own code (``decoding/search.py:140``)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/valueguide/" in name:
            return f"{name.rsplit('/valueguide/', 1)[1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "outside the package"


class Tally:
    """Running counts of the current step; ``close_step`` files them as one step."""

    def __init__(self):
        self.steps: list[dict] = []
        self.sync_sites: Counter = Counter()  # "module.py:line" of the package's code that synchronised
        self.shapes: dict[str, set] = {}
        self.inside: str | None = None  # the role whose pass is running
        self.entered = 0.0  # when that pass began
        self._reset()

    def _reset(self):
        self.now = Counter()
        self.began = time.perf_counter()
        self.model_seconds = 0.0

    def count_sync(self):
        self.now["syncs"] += 1
        self.sync_sites[_package_site()] += 1

    def close_step(self):
        seconds = time.perf_counter() - self.began
        self.steps.append({**self.now, "seconds": seconds, "model_seconds": self.model_seconds})
        self._reset()

    def merge_tail(self):
        """Work after the last step closed (the final scoring and selection) belongs to that step."""
        if self.steps:
            last = self.steps[-1]
            for key, value in self.now.items():
                last[key] = last.get(key, 0) + value
            last["seconds"] += time.perf_counter() - self.began
            last["model_seconds"] += self.model_seconds
        self._reset()


class _Reads(TorchFunctionMode):
    """Counts host reads of device tensors, and tracks which tensors live on the host: those a
    constructor makes without a device (on a CUDA run they are CPU tensors too) and host copies;
    a ``.to`` with a device makes a device tensor."""

    def __init__(self, tally: Tally, host: _HostTensors):
        super().__init__()
        self.tally, self.host, self.reading = tally, host, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONSTRUCTORS and kwargs.get("device") is None:
            return self._on_host(func(*args, **kwargs))
        if func is torch.Tensor.to and _names_device(args[1:], kwargs):
            out = func(*args, **kwargs)
            if out is args[0] and out in self.host:  # on a CPU, .to returns the host tensor itself
                out = out.view_as(out)
                self.host.discard(out)  # a view of a host tensor, but it stands for the device copy
            return out
        if func not in HOST_READS or self.reading:
            return func(*args, **kwargs)
        on_device = bool(args) and isinstance(args[0], torch.Tensor) and args[0] not in self.host
        self.reading = True  # the scalar read an item() dispatches is this sync, not another
        try:
            out = func(*args, **kwargs)
        finally:
            self.reading = False
        if on_device:
            self.tally.count_sync()
            if isinstance(out, torch.Tensor):
                if out is args[0]:  # on a CPU, .cpu() returns the tensor itself, which stays a device tensor
                    out = out.view_as(out)
                self._on_host(out)
        return out

    def _on_host(self, out):
        if isinstance(out, torch.Tensor):
            self.host.add(out)
        return out


def _names_device(args, kwargs) -> bool:
    return kwargs.get("device") is not None or any(isinstance(a, (str, torch.device)) for a in args)


class _Ops(TorchDispatchMode):
    def __init__(self, tally: Tally, host: _HostTensors, reads: _Reads):
        super().__init__()
        self.tally, self.host, self.reads = tally, host, reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        out = func(*args, **kwargs)
        now = self.tally.now
        now["ops_in_models" if self.tally.inside else "ops_outside"] += 1
        # as CUDA would place the output: on the host only when every input that is no 0-dim scalar is there
        spread = [t for t in inputs if t.dim() > 0] or inputs
        from_host = bool(spread) and all(t in self.host for t in spread)
        if from_host:
            for t in _tensors(out):
                self.host.add(t)
        elif not self.reads.reading and self._syncs(func, args):
            self.tally.count_sync()
        if func is aten.cat.default and self._cache_cat(args):
            now["cache_cat_bytes"] += out.numel() * out.element_size()
        return out

    def _syncs(self, func, args) -> bool:
        if func is aten._local_scalar_dense.default or func in SIZED_BY_DATA:
            return True
        # a mask on the host is counted on the host: no synchronisation
        return func in MASK_INDEXED and any(t.dtype == torch.bool and t not in self.host for t in _tensors(args[1]))

    @staticmethod
    def _cache_cat(args) -> bool:
        """A layer cache's append: floating 4D tensors ``[rows, heads, T, head_dim]`` joined on T."""
        tensors, dim = args[0], args[1] if len(args) > 1 else 0
        return (any(t.dim() == 4 and t.is_floating_point() for t in tensors)
                and dim % tensors[0].dim() == 2)


def _pass_shape(args, kwargs) -> tuple | None:
    """(ids shape, mask shape) of a pass, or None for a call that takes no token ids (a head alone)."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
        return None
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    return tuple(ids.shape), tuple(mask.shape) if isinstance(mask, torch.Tensor) else None


@contextmanager
def model_regions(tally: Tally, models: list[tuple[str, object]]):
    """Marks the time and operators inside the models' passes: ``models`` gives each role an
    ``nn.Module`` (every submodule call counts as inside, the outermost one sets the role) or to a
    class whose ``__call__`` is a pass (the packed runners, which call no modules), as (role, model) pairs."""
    depth = [0]

    def enter(role, args, kwargs):
        depth[0] += 1
        if depth[0] == 1:
            tally.inside, tally.entered = role, time.perf_counter()
            shape = _pass_shape(args, kwargs)
            if shape is not None:
                tally.shapes.setdefault(role, set()).add(shape)

    def leave():
        depth[0] -= 1
        if depth[0] == 0:
            tally.model_seconds += time.perf_counter() - tally.entered
            tally.inside = None

    with ExitStack() as stack:
        for role, model in models:
            if isinstance(model, torch.nn.Module):
                for module in model.modules():
                    pre = module.register_forward_pre_hook(lambda m, a, k, r=role: enter(r, a, k), with_kwargs=True)
                    post = module.register_forward_hook(lambda m, a, o: leave(), always_call=True)
                    stack.callback(pre.remove)
                    stack.callback(post.remove)
            else:
                stack.enter_context(_wrapped_call(model, role, enter, leave))
        yield


@contextmanager
def _wrapped_call(cls, role, enter, leave):
    original = cls.__call__

    def call(self, *args, **kwargs):
        enter(role, args, kwargs)
        try:
            return original(self, *args, **kwargs)
        finally:
            leave()

    cls.__call__ = call
    try:
        yield
    finally:
        cls.__call__ = original


@contextmanager
def counting(tally: Tally):
    """Counts synchronisations, operators and cache-append bytes into ``tally`` while it runs."""
    host = _HostTensors()
    reads = _Reads(tally, host)
    from_numpy = torch.from_numpy  # no mode sees it: its tensors share a numpy array's host memory
    torch.from_numpy = lambda array: reads._on_host(from_numpy(array))
    try:
        with reads, _Ops(tally, host, reads):
            yield
    finally:
        torch.from_numpy = from_numpy


@contextmanager
def steps_at(tally: Tally, owner, name: str):
    """Closes a step each time ``owner.name`` returns (the decoder's append of a sampled token)."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        tally.close_step()
        return out

    setattr(owner, name, wrapped)
    try:
        yield
    finally:
        setattr(owner, name, original)
