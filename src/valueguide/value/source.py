"""Where a run's explicit value comes from: the fit_value folder, or a released checkpoint
(``fit_value.mode: pretrained``, the authors' token values) that no job fits."""

from __future__ import annotations

from ..config import value_is_pretrained as is_pretrained
from ..models import LoadOptions, load_own_tokenizer, load_tokenizer
from .authors import load_authors_value
from .model import ValueModel


def load_value(config: dict, value_dir=None, world_dir=None, options: LoadOptions = LoadOptions()):
    """``(value model, its tokenizer)``: the pretrained checkpoint in mode ``pretrained``, else the
    fitted folder ``value_dir`` (with the tokenizer saved there, or its backbone's)."""
    cfg = config["fit_value"]
    if is_pretrained(config):
        spec = cfg["pretrained"]
        return load_authors_value(spec, cfg["template"], world_dir, options), load_tokenizer(spec, world_dir, options)
    if value_dir is None:
        raise ValueError("this method needs the value model: pass value_path (stage fit_value's output)")
    value = ValueModel.from_pretrained(value_dir, options)
    fallback = value.meta.get("tokenizer", cfg["backbone"])
    return value, load_own_tokenizer(str(value_dir), fallback, world_dir, options)
