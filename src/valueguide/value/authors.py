"""The IVG authors' released token values (chadlzx/ivg: ``GPT2ModelForTokenScore``,
``LlamaModelForTokenScore``; e.g. chadlzx/gpt2-imdb-token-rm) as a ``ValueModel``.

Their checkpoint is a causal-LM body (``transformer.*`` for gpt2, ``model.*`` for Llama) and a
bias-free ``score_head`` of vocabulary size. Their value of token ``a`` after a prefix is
``score_head(h_last(prefix))[a]``, with no scaling: exactly what a token-head ``ValueModel`` computes
once its head holds ``score_head`` and a zero bias, so the decoders read them unchanged. Loading one
is how ``fit_value.mode: pretrained`` separates our pipeline from our fitted values.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..models import LoadOptions, local_folder
from ..specs import ModelNotFoundError
from .model import ValueModel, _load_backbone

HEAD_KEY = "score_head.weight"


def _score_head(folder: Path, allow_bin: bool) -> torch.Tensor:
    """``score_head.weight`` from the checkpoint's safetensors (sharded or not), or from pickled
    weights read with ``weights_only`` where allowed."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = [folder / json.loads(index.read_text())["weight_map"][HEAD_KEY]]
    else:
        files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            if HEAD_KEY in f.keys():
                return f.get_tensor(HEAD_KEY)
    if not files and allow_bin and (folder / "pytorch_model.bin").exists():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        if HEAD_KEY in state:
            return state[HEAD_KEY]
    raise ModelNotFoundError(f"{folder} holds no {HEAD_KEY!r} in safetensors weights: not one of the authors' token "
                             "values (or pickled weights only: set allow_bin_weights)")


def load_authors_value(spec: str, template: str, world_dir=None, options: LoadOptions = LoadOptions()) -> ValueModel:
    """The token value ``spec`` in the authors' layout, reading the prompt through ``template``. Their
    AlpacaEval value reads ``"<s>\\n\\nHuman: {prompt}\\n\\nAssitant:"``: the Llama tokenizer turns the
    literal ``<s>`` into BOS, as their scorer's ``add_special_tokens=True`` does."""
    folder = local_folder(spec, world_dir)
    head = _score_head(folder, options.allow_bin_weights)
    backbone = _load_backbone(str(folder), options).eval()
    config = backbone.config
    if tuple(head.shape) != (config.vocab_size, config.hidden_size):
        raise ModelNotFoundError(f"{spec}: {HEAD_KEY} has shape {tuple(head.shape)}, not (vocab {config.vocab_size}, "
                                 f"hidden {config.hidden_size}): not a token value")
    meta = {"pretrained": spec, "layout": "chadlzx/ivg token score", "template": template, "tokenizer": spec}
    model = ValueModel(backbone, "token", meta)
    with torch.no_grad():
        model.head.weight.copy_(head.to(model.head.weight))
    return model.eval()
