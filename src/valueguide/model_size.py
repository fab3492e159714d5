"""How many parameters a model has, without loading it: what the plan costs time and memory with.

Known hub models come from ``PARAMS`` (their model cards); any other model is sized from its config:
a tiny-world model from the world config's layers, width and vocabulary; a hub model or a local folder
from its ``config.json`` (for a hub id, only the copy already in the hub cache: nothing is downloaded).
The count is exact for the architectures the world builds (GPT-2 and the Llama family, Mixtral's experts
included); for others it counts the same blocks, an estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .specs import is_local_path, world_name

# (total, active per token) parameters of the models the paper configs load, from their model cards.
PARAMS = {
    "openai-community/gpt2": (124e6, 124e6),
    "openai-community/gpt2-large": (774e6, 774e6),
    "openai-community/gpt2-xl": (1.56e9, 1.56e9),
    "lvwerra/gpt2-imdb": (124e6, 124e6),
    "chadlzx/gpt2-imdb-dpo": (124e6, 124e6),
    "chadlzx/gpt2-imdb-token-rm": (124e6, 124e6),  # gpt2 + a vocabulary-sized head (tied size: as gpt2's LM head)
    "chadlzx/gpt2-summarize": (124e6, 124e6),
    "chadlzx/gpt2-summarize-dpo": (124e6, 124e6),
    "chadlzx/gpt2-summarize-token-rm": (124e6, 124e6),
    "chadlzx/llama-ultrafeedback-token-rm": (6.74e9, 6.74e9),
    "lvwerra/distilbert-imdb": (67e6, 67e6),
    "OpenAssistant/reward-model-deberta-v3-large-v2": (435e6, 435e6),
    "allenai/tulu-2-7b": (6.74e9, 6.74e9),
    "allenai/tulu-2-dpo-7b": (6.74e9, 6.74e9),
    "mistralai/Mistral-7B-Instruct-v0.2": (7.24e9, 7.24e9),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (46.7e9, 12.9e9),
    "hanseungwook/vas-llama-2-7b-hh-sft": (6.74e9, 6.74e9),  # Llama-2-7b, SFT on Anthropic HH (VAS)
    "hanseungwook/vas-tiny-llama-1.1b-hh-sft": (1.10e9, 1.10e9),  # TinyLlama-1.1B, SFT on Anthropic HH (VAS)
}
# Tokens of the real vocabularies the world's models speak (len() of the tokenizers make env builds).
WORLD_VOCAB = {"gpt2": 50257, "llama2": 32000, "mistral": 32000}
WORLD_POSITIONS = 256  # world.lm.MAX_POSITIONS: GPT-2's position table


@dataclass(frozen=True)
class Shape:
    """The blocks of a decoder-only transformer that hold its parameters."""

    gpt2: bool  # GPT-2's blocks (biases, layer norms with a bias, a position table) or the Llama family's
    vocab: int
    width: int
    layers: int
    inner: int  # width of the feed-forward layer (of each expert)
    kv_width: int  # width of the keys and of the values (grouped-query attention: less than ``width``)
    positions: int = 0
    experts: int = 1
    active_experts: int = 1
    tied: bool = True  # the output layer is the embedding matrix
    head: int | None = None  # a regression head of this many outputs instead of the LM head

    def params(self) -> tuple[int, int]:
        """(total, active per token) parameters."""
        d, bias = self.width, int(self.gpt2)
        attention = 2 * d * d + 2 * d * self.kv_width + bias * (2 * d + 2 * self.kv_width)
        expert = (2 if self.gpt2 else 3) * d * self.inner + bias * (self.inner + d)
        norm = (2 if self.gpt2 else 1) * d
        router = d * self.experts if self.experts > 1 else 0
        shared = self.layers * (attention + router + 2 * norm) + norm + (self.vocab + self.positions) * d
        head = d * self.head if self.head else (0 if self.tied else self.vocab * d)
        return (shared + head + self.layers * self.experts * expert,
                shared + head + self.layers * self.active_experts * expert)


def world_shape(spec: dict, reward: bool = False) -> Shape:
    """The shape ``world.lm`` builds for a world model spec (``reward``: the gold reward model's)."""
    width, layers = spec["width"], spec["layers"]
    if reward or spec["arch"] == "gpt2":
        return Shape(True, WORLD_VOCAB[spec["vocab"]], width, layers, 4 * width, width, WORLD_POSITIONS,
                     head=1 if reward else None)
    kv_heads = max(1, spec["heads"] // 2)
    experts = spec.get("experts", 4) if spec["arch"] == "mixtral" else 1
    return Shape(False, WORLD_VOCAB[spec["vocab"]], width, layers, 2 * width, width // spec["heads"] * kv_heads,
                 experts=experts, active_experts=min(2, experts))


def config_shape(cfg: dict) -> Shape:
    """The shape a transformers ``config.json`` describes."""
    if cfg.get("model_type") == "gpt2":
        width = cfg["n_embd"]
        return Shape(True, cfg["vocab_size"], width, cfg["n_layer"], cfg.get("n_inner") or 4 * width, width,
                     cfg.get("n_positions", 1024))
    width, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    experts = cfg.get("num_local_experts") or 1
    return Shape(False, cfg["vocab_size"], width, cfg["num_hidden_layers"], cfg.get("intermediate_size", 4 * width),
                 width // heads * (cfg.get("num_key_value_heads") or heads), experts=experts,
                 active_experts=min(cfg.get("num_experts_per_tok") or 1, experts),
                 tied=cfg.get("tie_word_embeddings", True))


def _config_json(spec: str) -> Path | None:
    """A model's config.json on this machine: in its folder, or in the hub cache (never downloaded)."""
    if is_local_path(spec):
        path = Path(spec).expanduser() / "config.json"
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec, "config.json")
    return Path(found) if isinstance(found, str) else None


def model_params(spec: str, config: dict) -> tuple[float, float] | None:
    """(total, active) parameters of the model a spec names; None when nothing here says."""
    if spec in PARAMS:
        return PARAMS[spec]
    name = world_name(spec)
    if name is not None:
        world = config.get("world") or {}
        if name == "reward" and "reward" in world:
            return world_shape(world["reward"], reward=True).params()
        return world_shape(world["models"][name]).params() if name in world.get("models", {}) else None
    path = _config_json(spec)
    if path is None:
        return None
    try:
        return config_shape(json.loads(path.read_text())).params()
    except (KeyError, TypeError, ValueError):  # a config.json of an architecture it cannot read
        return None
