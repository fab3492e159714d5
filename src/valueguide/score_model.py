"""The gold reward models of the IVG authors (chadlzx/golden_rm_summarize): safe-rlhf score models,
``LlamaModelForScore`` (a Llama body under ``model.``, a ``score_head`` of width 1 and normaliser
buffers), which ``AutoModelForSequenceClassification`` cannot read.

Their reward is ``score_head`` at the last attended token of BOS + text + EOS (scripts/
summarize_from_feedback/eval.py appends ``eos_token``), normalised only where the config says
``do_normalize``. This wrapper returns it as a one-logit classifier's ``logits``, so ``RewardModel``
scores it like any one-logit reward model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModel

from .models import LoadOptions, local_folder, torch_dtype
from .specs import ModelNotFoundError

ARCHITECTURES = ("LlamaModelForScore",)


@dataclass
class ScoreOutput:
    logits: torch.Tensor  # [B, 1]


def score_model_folder(spec: str, world_dir=None) -> Path | None:
    """The folder of ``spec`` when it is a score model (by its config's architectures), else None."""
    try:
        folder = local_folder(spec, world_dir)
    except ModelNotFoundError:  # the classifier loader reports it
        return None
    config = folder / "config.json"
    if config.exists() and set(json.loads(config.read_text()).get("architectures") or ()) & set(ARCHITECTURES):
        return folder
    return None


def _head_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys() if k.startswith("score_head.")})
    return out


class ScoreModel(nn.Module):
    def __init__(self, body: nn.Module, head: dict[str, torch.Tensor]):
        super().__init__()
        config = body.config
        self.body, self.config = body, config
        weight = head["score_head.weight"]
        self.head = nn.Linear(weight.shape[1], weight.shape[0], bias="score_head.bias" in head)
        self.head.load_state_dict({k.removeprefix("score_head."): v for k, v in head.items()})
        self.head.to(body.device, body.dtype)
        normalize = getattr(config, "do_normalize", False)
        self.mean = torch.tensor(getattr(config, "mean", [0.0]) if normalize else [0.0])
        self.std = torch.tensor(getattr(config, "var", [1.0]) if normalize else [1.0]).sqrt() + (1e-8 if normalize else 0)

    def forward(self, input_ids, attention_mask, **_) -> ScoreOutput:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.shape[1] - 1 - attention_mask.flip(1).long().argmax(1)  # last attended position
        scores = self.head(hidden[torch.arange(len(last), device=hidden.device), last]).float()
        return ScoreOutput((scores - self.mean.to(scores)) / self.std.to(scores))


def load_score_model(folder: str | Path, options: LoadOptions = LoadOptions()) -> ScoreModel:
    folder = Path(folder)
    body = AutoModel.from_pretrained(str(folder), dtype=torch_dtype(options.dtype, options.device), use_safetensors=True,
                                     trust_remote_code=options.trust_remote_code)
    head = _head_tensors(folder)
    if "score_head.weight" not in head:
        raise FileNotFoundError(f"{folder} names a score model but its safetensors hold no score_head.weight")
    return ScoreModel(body.to(options.device), head).eval()
