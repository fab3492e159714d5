"""One loader for every model the pipeline touches.

A model is named by a *spec* (``specs.py``): ``world:NAME``, a local folder, or a Hugging Face hub
id. Loading is offline-safe: a hub id that is not cached locally gives
an error naming the model and how to fetch it, instead of a stack trace from deep inside the hub
client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from .specs import ModelNotFoundError, is_local_path, world_name


@dataclass(frozen=True)
class LoadOptions:
    device: str = "cpu"
    dtype: str = "auto"  # auto: fp32 on CPU, bf16 on CUDA
    device_map: str | None = None  # "auto" spreads a large model over the GPUs of one node
    trust_remote_code: bool = False
    allow_bin_weights: bool = False  # pickled .bin weights (loaded weights_only); safetensors otherwise


def load_options(config: dict) -> LoadOptions:
    """The loading options a pipeline config (or a stage's slice of it) asks for."""
    return LoadOptions(device=config.get("device", "cpu"), dtype=config.get("dtype", "auto"),
                       device_map=config.get("device_map"), trust_remote_code=config.get("trust_remote_code", False),
                       allow_bin_weights=config.get("allow_bin_weights", False))


def resolve_spec(spec: str, world_dir: str | os.PathLike | None = None) -> str:
    """Turn a spec into what ``from_pretrained`` takes: a local path or a hub id."""
    name = world_name(spec)
    if name is not None:
        if world_dir is None:
            raise ModelNotFoundError(f"{spec!r} names a tiny-world model but no world directory is set")
        path = Path(world_dir) / "models" / name
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"tiny-world model {spec!r} not found at {path}: build the world first "
                "(`valueguide build-world` or the Snakemake rule build_world)"
            )
        return str(path)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json")
        return str(path)
    if is_local_path(spec):
        raise ModelNotFoundError(f"model folder {spec!r} does not exist")
    return spec


def local_folder(spec: str, world_dir=None) -> Path:
    """The folder holding ``spec``'s files, for readers other than ``from_pretrained``: a local or
    world folder, or the cached snapshot of a hub model (which the fetch stage downloads)."""
    target = resolve_spec(spec, world_dir)
    if is_local_path(target):
        return Path(target)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(target, local_files_only=True))
    except Exception as exc:  # not in the cache: the hub client raises several kinds
        raise ModelNotFoundError(f"{spec!r} is not cached here: fetch it first (`huggingface-cli download {spec}` "
                                 f"or the Snakemake rule fetch). Cause: {exc}") from exc


def torch_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None


def _from_pretrained(loader, spec: str, world_dir, options: LoadOptions, what: str, **kwargs):
    target = resolve_spec(spec, world_dir)
    try:
        return loader.from_pretrained(target, trust_remote_code=options.trust_remote_code, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelNotFoundError(
            f"cannot load {what} {spec!r}: it is not a local folder and could not be fetched"
            f"{' (HF_HUB_OFFLINE=1)' if offline else ''}. Fetch it once with network access "
            f"(`huggingface-cli download {spec}`) or point the config at a local copy. Cause: {exc}"
        ) from exc


def _model_kwargs(options: LoadOptions) -> dict:
    # None lets transformers fall back to .bin (which it loads with weights_only); True refuses it
    kwargs = {"dtype": torch_dtype(options.dtype, options.device),
              "use_safetensors": None if options.allow_bin_weights else True}
    if options.device_map:
        kwargs["device_map"] = options.device_map
    return kwargs


def _place(model, options: LoadOptions):
    if not options.device_map:
        model = model.to(options.device)
    return model.eval()


def load_tokenizer(spec: str, world_dir=None, options: LoadOptions = LoadOptions()) -> PreTrainedTokenizerBase:
    tok = _from_pretrained(AutoTokenizer, spec, world_dir, options, "tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def load_own_tokenizer(spec: str, fallback_spec: str, world_dir=None, options: LoadOptions = LoadOptions()):
    """The tokenizer saved with a model, or (a model folder saved without one) ``fallback_spec``'s."""
    path = Path(resolve_spec(spec, world_dir))
    has_own = not path.is_dir() or any((path / f).exists() for f in TOKENIZER_FILES)
    return load_tokenizer(spec if has_own else fallback_spec, world_dir, options)


def load_causal_lm(spec: str, world_dir=None, options: LoadOptions = LoadOptions()):
    model = _from_pretrained(AutoModelForCausalLM, spec, world_dir, options, "causal LM", **_model_kwargs(options))
    return _place(model, options)


def load_sequence_classifier(spec: str, world_dir=None, options: LoadOptions = LoadOptions()):
    model = _from_pretrained(
        AutoModelForSequenceClassification, spec, world_dir, options, "reward model", **_model_kwargs(options)
    )
    return _place(model, options)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when two tokenizers map every token string to the same id (a method may share logits)."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())
