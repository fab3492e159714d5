"""The numbers our results are shown beside: the paper's, and the public AlpacaEval 2.0 leaderboard's.

Paper numbers are from the IVG paper's abstract (arXiv 2409.17819) and one sanity check of the authors'
code (chadlzx/ivg). Leaderboard numbers are read from the CSV that ships inside the installed alpaca_eval
package, so they are exactly the ones its evaluator would print beside a new model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


METHOD_ORDER = ("base", "bon", "eft", "vas", "cbs_implicit", "cbs_explicit", "ivg")


def ordered(methods) -> list[str]:
    """Methods in the order of the paper's tables, then any others in the order they first appear."""
    seen = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]


@dataclass(frozen=True)
class PaperNumber:
    task: str
    model: str  # the paper's name of the large model
    method: str
    metric: str  # a column of our metrics tables
    value: float
    source: str


PAPER_NUMBERS = (
    PaperNumber("instruction", "Mistral-7B-Instruct-v0.2", "base", "length_controlled_winrate", 19.51,
                "IVG abstract: AlpacaEval 2.0 LC win rate, GPT-4-turbo judge, Tulu guidance"),
    PaperNumber("instruction", "Mistral-7B-Instruct-v0.2", "ivg", "length_controlled_winrate", 26.51,
                "IVG abstract: AlpacaEval 2.0 LC win rate, GPT-4-turbo judge, Tulu guidance"),
    PaperNumber("instruction", "Mixtral-8x7B-Instruct-v0.1", "base", "length_controlled_winrate", 25.58,
                "IVG abstract: AlpacaEval 2.0 LC win rate, GPT-4-turbo judge, Tulu guidance"),
    PaperNumber("instruction", "Mixtral-8x7B-Instruct-v0.1", "ivg", "length_controlled_winrate", 33.75,
                "IVG abstract: AlpacaEval 2.0 LC win rate, GPT-4-turbo judge, Tulu guidance"),
    PaperNumber("summarization", "gpt2-large", "base", "reward_mean", -1.84,
                "authors' code: gold reward, sanity check on 20 TL;DR prompts"),
    PaperNumber("summarization", "gpt2-large", "cbs_explicit", "reward_mean", 1.42,
                "authors' code: gold reward, sanity check on 20 TL;DR prompts"),
)

# Our model keys (config `models`) -> the paper's names; the tiny world's stand-ins map to the models
# they stand in for. A config may pass its own mapping.
DEFAULT_PAPER_NAMES = {
    "gpt2": "gpt2", "gpt2-large": "gpt2-large", "gpt2-xl": "gpt2-xl",
    "mistral": "Mistral-7B-Instruct-v0.2", "mixtral": "Mixtral-8x7B-Instruct-v0.1",
}

LEADERBOARD_MODELS = ("Mistral-7B-Instruct-v0.2", "Mixtral-8x7B-Instruct-v0.1")
LEADERBOARD_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"


def paper_number(task: str | None, model: str, method: str, metric: str,
                 names: dict[str, str] | None = None) -> PaperNumber | None:
    """The paper's number for this cell, if it reported one."""
    paper_model = (names or DEFAULT_PAPER_NAMES).get(model, model)
    for number in PAPER_NUMBERS:
        if (number.task, number.model, number.method, number.metric) == (task, paper_model, method, metric):
            return number
    return None


def _alpaca_eval_dir() -> Path:
    """The installed alpaca_eval package folder, found without importing it (importing is slow)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("alpaca_eval is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def leaderboard_reference(models=LEADERBOARD_MODELS, annotator: str = LEADERBOARD_ANNOTATOR) -> pd.DataFrame:
    """The AlpacaEval 2.0 leaderboard rows of ``models``: LC win rate, win rate, its s.e., avg length."""
    path = _alpaca_eval_dir() / "leaderboards" / "data_AlpacaEval_2" / f"{annotator}_leaderboard.csv"
    board = pd.read_csv(path, index_col=0)
    missing = [m for m in models if m not in board.index]
    if missing:
        raise KeyError(f"{missing} not on the leaderboard {path}")
    rows = board.loc[list(models), ["length_controlled_winrate", "win_rate", "standard_error", "avg_length"]]
    return rows.rename_axis("generator").reset_index()
