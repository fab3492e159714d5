"""The gold reward: a sequence classifier whose reward is logit(positive) - logit(negative).

This is the recipe of the paper's IMDB evaluator (distilbert-imdb), applied to prompt + response
text. A one-logit reward model (the usual preference reward model, e.g. OpenAssistant's deberta, and
the tiny world's regressor of its graded score) gives its logit.
"""

from __future__ import annotations

import numpy as np
import torch

from .models import LoadOptions, load_sequence_classifier, load_tokenizer
from .score_model import load_score_model, score_model_folder


class RewardModel:
    """Scores texts in batches; ``positive_index``/``negative_index`` pick the two logits."""

    def __init__(self, model, tokenizer, positive_index: int = 1, negative_index: int = 0,
                 batch_size: int = 64, max_length: int = 512, suffix: str = ""):
        self.model = model
        # Right padding: classifiers pool the last real token, and absolute position embeddings
        # (gpt2) would shift under left padding.
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        self.positive_index = positive_index
        self.negative_index = negative_index
        self.batch_size = batch_size
        self.max_length = max_length
        self.suffix = suffix  # appended to every text (EOS, where the model was trained to read there)
        self.calls = 0

    @classmethod
    def load(cls, spec: str, world_dir=None, options: LoadOptions = LoadOptions(), **kwargs) -> "RewardModel":
        """A sequence classifier, or a safe-rlhf score model (the IVG authors' gold rewards), which
        reads the text with EOS appended as their evaluation does."""
        tokenizer = load_tokenizer(spec, world_dir, options)
        folder = score_model_folder(spec, world_dir)
        if folder is not None:
            # no cut at 512 tokens: a long post would lose the EOS the score is read at
            return cls(load_score_model(folder, options), tokenizer, suffix=tokenizer.eos_token,
                       **{"max_length": 4096, **kwargs})
        model = load_sequence_classifier(spec, world_dir, options)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, texts: list[str]) -> np.ndarray:
        """Reward of each text, as float64."""
        out = np.empty(len(texts), dtype=np.float64)
        for start in range(0, len(texts), self.batch_size):
            chunk = [text + self.suffix for text in texts[start:start + self.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            logits = self.model(**enc).logits.float()
            self.calls += 1
            if logits.shape[-1] == 1:
                reward = logits[:, 0]
            else:
                reward = logits[:, self.positive_index] - logits[:, self.negative_index]
            out[start:start + len(chunk)] = reward.cpu().numpy()
        return out
