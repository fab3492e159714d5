"""Who decides whether a model output beats the reference output of an instruction.

Every judge returns annotations in alpaca_eval's format (``instruction``, ``output_1`` = the
reference, ``output_2`` = the model, ``generator_1``/``generator_2``, ``preference`` in [1, 2] with
2 meaning the model wins, ``annotator``), so alpaca_eval's win-rate and length-controlled GLM code
reads them unchanged.

- ``local``: the gold reward model as a Bradley-Terry judge, P(model > reference) =
  sigmoid(r_model - r_reference). Deterministic and offline; its numbers are comparable only to
  each other, not to the public leaderboard.
- ``gpt4_turbo``: alpaca_eval's ``weighted_alpaca_eval_gpt4_turbo`` annotator, the AlpacaEval 2.0
  judge, called through alpaca_eval's ``PairwiseAnnotator``. It needs ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from scipy.special import expit

from ..models import LoadOptions
from ..reward import RewardModel
from . import API_KEY_VAR, keep_root_log_level

with keep_root_log_level():
    from alpaca_eval.annotators import PairwiseAnnotator

GPT4_TURBO_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
LOCAL_ANNOTATOR = "valueguide_local_reward"
JUDGES = ("local", "gpt4_turbo")


class MissingAPIKeyError(RuntimeError):
    """The GPT-4 judge was asked for without an API key in the environment."""


def require_api_key() -> str:
    """The OpenAI key from the environment; checked before any judging so a long run never fails halfway."""
    key = os.environ.get(API_KEY_VAR, "").strip()
    if not key:
        raise MissingAPIKeyError(
            f"judge 'gpt4_turbo' needs the environment variable {API_KEY_VAR} (an OpenAI API key); "
            "it is not set. Export it, or use the offline judge 'local'."
        )
    return key


def _check_pairs(model_outputs: list[dict], reference_outputs: list[dict]) -> None:
    """Judging pairs row i with row i: the two lists must be of the same instructions, in order."""
    ours = [r["instruction"] for r in model_outputs]
    if ours != [r["instruction"] for r in reference_outputs]:
        raise ValueError("model outputs and reference outputs are not of the same instructions in the same order")


class LocalJudge:
    """A reward model turned into pairwise preferences; ``reward`` has ``score(texts) -> array``."""

    name = LOCAL_ANNOTATOR

    def __init__(self, reward):
        self.reward = reward

    def annotate(self, model_outputs: list[dict], reference_outputs: list[dict]) -> pd.DataFrame:
        _check_pairs(model_outputs, reference_outputs)
        # Same text convention as the reward tasks: instruction (prompt) + output.
        r_ref = self.reward.score([r["instruction"] + r["output"] for r in reference_outputs])
        r_model = self.reward.score([r["instruction"] + r["output"] for r in model_outputs])
        return pd.DataFrame({
            "instruction": [r["instruction"] for r in model_outputs],
            "output_1": [r["output"] for r in reference_outputs],
            "generator_1": [r["generator"] for r in reference_outputs],
            "output_2": [r["output"] for r in model_outputs],
            "generator_2": [r["generator"] for r in model_outputs],
            "reward_1": r_ref,
            "reward_2": r_model,
            "preference": 1.0 + expit(r_model - r_ref),
            "annotator": self.name,
        })


class GPT4TurboJudge:
    """AlpacaEval 2.0's judge through alpaca_eval's own annotator.

    The key is handed to alpaca_eval's OpenAI decoder as a call argument (its logging drops every
    ``*api_key*`` argument) and is never stored in the annotations, the cache or our logs.
    """

    name = GPT4_TURBO_ANNOTATOR

    def __init__(self, api_key: str, cache_path: str | Path | None):
        self._api_key = api_key
        self.cache_path = cache_path

    def __repr__(self) -> str:
        return f"GPT4TurboJudge(cache_path={self.cache_path!r})"

    def annotate(self, model_outputs: list[dict], reference_outputs: list[dict]) -> pd.DataFrame:
        _check_pairs(model_outputs, reference_outputs)
        # The cache (alpaca_eval's own) lets an interrupted paid run resume without re-asking;
        # by default alpaca_eval would keep it inside its installed package.
        annotator = PairwiseAnnotator(annotators_config=self.name, caching_path=self.cache_path)
        rows = annotator.annotate_head2head(outputs_1=reference_outputs, outputs_2=model_outputs, is_ordered=True,
                                            openai_api_keys=[self._api_key])
        return pd.DataFrame(rows)


def make_judge(name: str, reward_spec: str, world_dir=None, options: LoadOptions | None = None, cache_path=None):
    """Build a judge; the API key is checked here, before any output is judged."""
    if name == "gpt4_turbo":
        return GPT4TurboJudge(require_api_key(), cache_path)
    if name == "local":
        return LocalJudge(RewardModel.load(reward_spec, world_dir, options or LoadOptions()))
    raise ValueError(f"unknown judge {name!r}; use one of {JUDGES}")
