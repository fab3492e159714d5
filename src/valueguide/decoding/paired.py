"""Run the tuned and untuned small models as one model over a doubled batch.

EFT and IVG call both small models at every step. At the sizes where guidance is cheap (a small
pair guiding a large model) each small forward pass costs mostly fixed per-module overhead, so two
passes cost twice one. ``pair_models`` builds one module whose weight-bearing leaves hold the two
models' weights stacked on a new leading axis and apply them with batched matmuls: rows ``[0, N)``
of its batch go through the tuned weights, rows ``[N, 2N)`` through the untuned ones. Everything
without weights (attention, rotary embeddings, masks, the KV cache) is per row already, so it is
shared as is. One call of the pair does the module calls of one small model.

GPT-2's activation (transformers' ``NewGELUActivation``: the tanh approximation of GELU written
as seven tensor operations) becomes torch's one fused ``gelu(approximate="tanh")``, the same function
to within a float rounding (2e-7), at less than half the cost: with the padded candidate columns of
guidance across vocabularies it was a fifth of a small pass.

The two models' parameters are re-pointed at slices of the stacked storage, so memory is not
doubled (build the pair where the models will run: it is not meant to be moved). Models that
cannot be paired (other module types with weights, different shapes, devices or dtypes, token
routing as in mixture-of-experts) are reported by ``PairingError``, and a pair is only used once a
probe pass matches the separate models.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

HALVES = 2


class PairingError(ValueError):
    """The two models cannot run as one paired model."""


def _halves(x: torch.Tensor) -> torch.Tensor:
    """``[2N, ...]`` -> ``[2, N * ..., last]``: the tuned rows, then the untuned rows."""
    if x.shape[0] % HALVES:
        raise PairingError(f"a paired model needs an even batch, got {x.shape[0]} rows")
    return x.reshape(HALVES, -1, x.shape[-1])


class PairedLinear(nn.Module):
    """``nn.Linear`` (weight ``[out, in]``) or transformers' ``Conv1D`` (``[in, out]``), stacked."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, transposed: bool):
        super().__init__()
        self.weight, self.bias = weight, bias
        # views made once: the per-call cost is what pairing saves
        self._w = weight if transposed else weight.transpose(1, 2)
        self._b = bias[:, None, :] if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _halves(x)
        out = torch.bmm(h, self._w) if self._b is None else torch.baddbmm(self._b, h, self._w)
        return out.view(*x.shape[:-1], out.shape[-1])


class PairedEmbedding(nn.Module):
    """Embedding tables stacked as one table of ``2V`` rows; the untuned rows look up ``id + V``."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight
        self._table = weight.flatten(0, 1)
        self._offsets: dict[tuple, torch.Tensor] = {}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        key = (ids.shape[0], ids.dim(), ids.device)
        if key not in self._offsets:
            if ids.shape[0] % HALVES:
                raise PairingError(f"a paired model needs an even batch, got {ids.shape[0]} rows")
            n, vocab = ids.shape[0] // HALVES, self.weight.shape[1]
            offset = torch.arange(HALVES, device=ids.device).repeat_interleave(n) * vocab
            self._offsets[key] = offset.view(-1, *[1] * (ids.dim() - 1))
        return F.embedding(ids + self._offsets[key], self._table)


class PairedLayerNorm(nn.Module):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, eps: float, shape):
        super().__init__()
        self.weight, self.bias, self.eps, self.shape = weight, bias, eps, shape
        self._w = weight[:, None, :]
        self._b = bias[:, None, :] if bias is not None else torch.zeros_like(self._w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _halves(F.layer_norm(x, self.shape, eps=self.eps))
        return torch.addcmul(self._b, h, self._w).view(x.shape)


class PairedRMSNorm(nn.Module):
    """The Llama-family RMSNorm (normalise in float32, scale by ``weight`` in the input dtype)."""

    def __init__(self, weight: nn.Parameter, eps: float):
        super().__init__()
        self.weight, self.eps = weight, eps
        self._w = weight[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self._w * _halves(h.to(x.dtype))).view(x.shape)


class FusedTanhGELU(nn.Module):
    """GPT-2's GELU (the tanh approximation) in one fused operation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


# Activations computed, to within a rounding, by FusedTanhGELU.
TANH_GELUS = {"NewGELUActivation"}

# Llama-family norms that compute exactly what PairedRMSNorm does.
RMS_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "MixtralRMSNorm", "Qwen2RMSNorm"}


def _paired_leaf(module: nn.Module, stack) -> nn.Module:
    """The paired replacement of one leaf module with weights (``stack(name)`` stacks a parameter)."""
    bias = stack("bias") if getattr(module, "bias", None) is not None else None
    if isinstance(module, nn.Linear):
        return PairedLinear(stack("weight"), bias, transposed=False)
    if isinstance(module, Conv1D):
        return PairedLinear(stack("weight"), bias, transposed=True)
    if isinstance(module, nn.Embedding):
        return PairedEmbedding(stack("weight"))
    if isinstance(module, nn.LayerNorm):
        return PairedLayerNorm(stack("weight"), bias, module.eps, module.normalized_shape)
    if type(module).__name__ in RMS_NORMS:
        return PairedRMSNorm(stack("weight"), module.variance_epsilon)
    raise PairingError(f"no paired version of {type(module).__name__}")


def _check_same_shape(tuned: nn.Module, untuned: nn.Module) -> None:
    if not hasattr(tuned, "config"):
        raise PairingError(f"{type(tuned).__name__} is not a transformers model")
    if type(tuned) is not type(untuned):
        raise PairingError(f"different classes: {type(tuned).__name__} and {type(untuned).__name__}")
    a, b = dict(tuned.named_parameters(remove_duplicate=False)), dict(untuned.named_parameters(remove_duplicate=False))
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise PairingError("the two models' parameters differ in names or shapes")
    tensors = [*a.values(), *b.values()]
    if len({(t.device, t.dtype) for t in tensors}) > 1:
        raise PairingError("the two models' parameters must all be on one device, in one dtype")
    if _ties(a) != _ties(b):
        raise PairingError("the two models tie different parameters")


def _ties(params: dict[str, nn.Parameter]) -> dict[str, str]:
    """Each parameter name -> the first name holding the same tensor (itself when untied)."""
    first: dict[int, str] = {}
    return {name: first.setdefault(id(p), name) for name, p in params.items()}


@torch.no_grad()
def pair_models(tuned: nn.Module, untuned: nn.Module) -> nn.Module:
    """One module computing ``tuned`` on the first half of its batch and ``untuned`` on the second."""
    _check_same_shape(tuned, untuned)
    originals = {name: (mod_t, mod_u) for (name, mod_t), (_, mod_u)
                 in zip(tuned.named_modules(remove_duplicate=False), untuned.named_modules(remove_duplicate=False))}
    stacked: dict[int, nn.Parameter] = {}  # id(tuned parameter) -> stacked tensor (ties share one)

    def stacker(mod_t: nn.Module, mod_u: nn.Module):
        def stack(attr: str) -> torch.Tensor:
            p_t, p_u = getattr(mod_t, attr), getattr(mod_u, attr)
            if id(p_t) not in stacked:
                both = nn.Parameter(torch.stack([p_t.detach(), p_u.detach()]), requires_grad=False)
                p_t.data, p_u.data = both.data[0], both.data[1]  # the originals now view the stacked storage
                stacked[id(p_t)] = both
            return stacked[id(p_t)]
        return stack

    # copy the module tree, not the weights: every leaf with weights is replaced below
    paired = copy.deepcopy(untuned, memo={id(p): p for p in untuned.parameters()})
    for name, module in list(paired.named_modules()):
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if any(True for _ in module.children()):
            raise PairingError(f"{name} ({type(module).__name__}) holds weights and submodules")
        parent_name, _, attr = name.rpartition(".")
        parent = paired.get_submodule(parent_name)
        setattr(parent, attr, _paired_leaf(module, stacker(*originals[name])))
    for name, module in list(paired.named_modules()):
        if type(module).__name__ in TANH_GELUS:
            parent_name, _, attr = name.rpartition(".")
            setattr(paired.get_submodule(parent_name), attr, FusedTanhGELU())
    _probe(paired, tuned, untuned)
    return paired.eval()


def _probe(paired: nn.Module, tuned: nn.Module, untuned: nn.Module) -> None:
    """Refuse a pair whose logits on a short input differ from the two models run separately."""
    device = next(tuned.parameters()).device
    ids = torch.tensor([[1, 2, 3], [3, 1, 2]], device=device) % tuned.config.vocab_size
    pos = torch.arange(3, device=device).expand(2, -1)
    expect = torch.cat([m(input_ids=ids, position_ids=pos).logits for m in (tuned, untuned)]).float()
    try:  # positions per row: a paired embedding cannot broadcast one row of positions over both halves
        got = paired(input_ids=torch.cat([ids, ids]), position_ids=torch.cat([pos, pos])).logits.float()
    except PairingError:
        raise
    except Exception as error:  # a module that mixes rows, e.g. token routing
        raise PairingError(f"the paired model fails on a probe input: {error}") from error
    tol = 1e-4 if expect.dtype == torch.float32 and tuned.dtype == torch.float32 else 2e-2
    if not torch.allclose(got, expect, atol=tol * max(1.0, float(expect.abs().max())), rtol=0):
        raise PairingError("the paired model's logits differ from the two models run separately")
