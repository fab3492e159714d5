"""Reward tasks (sentiment, summarization): the gold reward of every generation, and its cost.

The text scored is prompt + output, the convention of stage sample, so that the rewards the value
was fitted on and the rewards it is judged by mean the same thing. With the tiny world's gold reward,
each text also gets the world's own score (``world.corpus.text_score``), the quantity that reward
model was trained to predict: where the two part, a method has found what the reward model misjudges.
Every (model, method) also gets its KL from the frozen model (``kl_summary``, docs/ALGORITHMS.md §5.4).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import ArtifactError, read_parquet, write_parquet
from ..decoding.method_spec import Method
from ..reward import RewardModel
from ..models import load_options
from ..specs import world_name
from ..world.corpus import text_score
from . import TOKENS_BY_ROLE, split_key, write_csv

log = logging.getLogger(__name__)

GENERATION_COLUMNS = ("prompt_id", "prompt", "output", "n_tokens", "forward_passes", "tokens_encoded",
                      "candidate_tokens", "wall_time")


def read_generations(path: str | Path) -> pd.DataFrame:
    gens = read_parquet(path, required=GENERATION_COLUMNS)
    if gens.empty:
        raise ArtifactError(f"{path} holds no generations")
    return gens


def _sum_json(column: pd.Series) -> dict[str, float]:
    """Sum a column of JSON objects (model role -> count) role by role."""
    totals: dict[str, float] = {}
    for text in column:
        for role, value in json.loads(text).items():
            totals[role] = totals.get(role, 0.0) + value
    return totals


def cost_summary(gens: pd.DataFrame) -> dict[str, float]:
    """Cost of a whole generation run: totals over its rows (each row holds its share of its batch).

    Shared with the AlpacaEval path, so that quality can be read against cost for every task.
    """
    passes = _sum_json(gens["forward_passes"])
    out = {"tokens_mean": float(gens["n_tokens"].mean()), "passes": sum(passes.values())}
    out.update({f"passes_{role}": value for role, value in sorted(passes.items())})
    # every token any model processed: the rows' own, and the candidates of token-level guidance; in all
    # and by model role (the cost that compares methods at equal compute, unlike batched passes)
    by_role = _sum_json(gens["tokens_encoded"])
    for role, value in _sum_json(gens["candidate_tokens"]).items():
        by_role[role] = by_role.get(role, 0.0) + value
    out["tokens_encoded"] = sum(by_role.values())
    out.update({f"{TOKENS_BY_ROLE}{role}": value for role, value in sorted(by_role.items())})
    out["wall_time"] = float(gens["wall_time"].sum())
    return out


def configured_methods(config: dict, keys) -> dict[str, Method]:
    """The methods ``generate.methods`` of the config that the ``(model, method)`` keys name: how a method's
    KL is known depends on it."""
    methods = (config.get("generate") or {}).get("methods") or {}
    unknown = sorted({name for _, name in keys} - set(methods))
    if unknown:
        raise ValueError(f"generations of methods {unknown}, which the config's generate.methods does not name: "
                         "how a method's KL from the frozen model is known depends on it (docs/ALGORITHMS.md §5.4)")
    return {name: Method.from_config(methods[name] or {}) for _, name in keys}


def kl_summary(gens: pd.DataFrame, method: Method) -> dict:
    """The KL from the frozen model of one (model, method) (docs/ALGORITHMS.md §5.4): ``kl_kind``, and
    ``kl_mean``/``kl_se`` the mean and standard error of the generations' ``kl`` (exact), the analytic bound
    and NaN (upper_bound), NaN and NaN (undefined; and generations written before the ``kl`` column)."""
    kind = method.kl_kind()
    mean = se = float("nan")
    if kind == "upper_bound":
        mean = method.kl_bound()
    elif kind == "exact" and "kl" in gens:
        mean, se = _mean_se(gens["kl"])
    return {"kl_kind": kind, "kl_mean": mean, "kl_se": se}


def cost_frame(rows: list[dict]) -> pd.DataFrame:
    """A metrics table from rows that carry ``cost_summary``: a role a method lacks costs 0 there."""
    table = pd.DataFrame(rows)
    by_role = [c for c in table.columns if c.startswith(("passes_", TOKENS_BY_ROLE))]
    table[by_role] = table[by_role].fillna(0.0)
    return table


def evaluate_reward(generations_path: str | Path, reward_model: RewardModel, model: str, method: str,
                    world_score: bool = False) -> pd.DataFrame:
    """The generations of one (model, method) with their gold reward (and, with ``world_score``, the
    tiny world's own score of the same text)."""
    gens = read_generations(generations_path)
    out = gens[list(GENERATION_COLUMNS)].copy()
    out.insert(0, "model", model)
    out.insert(1, "method", method)
    texts = [p + o for p, o in zip(out["prompt"], out["output"])]
    if "kl" in gens:
        out["kl"] = gens["kl"]
    out["reward"] = reward_model.score(texts)
    if world_score:
        out["world_score"] = [text_score(t) for t in texts]
    return out


def _mean_se(values: pd.Series) -> tuple[float, float]:
    n = len(values)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def summarize_rewards(frames: list[pd.DataFrame], methods: dict[str, Method]) -> pd.DataFrame:
    """One row per (model, method): mean gold reward, its standard error, n, the KL from the frozen model
    (``kl_summary``, ``methods`` by name) and the cost columns."""
    rows = []
    for frame in frames:
        for (model, method), g in frame.groupby(["model", "method"], sort=False):
            mean, se = _mean_se(g["reward"])
            row = {"model": model, "method": method, "n": len(g), "reward_mean": mean, "reward_se": se}
            if "world_score" in g:
                row["world_score_mean"], row["world_score_se"] = _mean_se(g["world_score"])
            rows.append({**row, **kl_summary(g, methods[method]), **cost_summary(g)})
    return cost_frame(rows)


def run_evaluate_reward(config: dict, generation_paths: dict[str, str], out_scores_path, out_metrics_path,
                        world_dir=None) -> pd.DataFrame:
    """Score every ``"model/method"`` generation file with ``config["reward_model"]``.

    Writes the per-generation scores (parquet) and the per-(model, method) metrics (CSV).
    """
    if not generation_paths:
        raise ValueError("no generations to evaluate")
    keys = {key: split_key(key) for key in generation_paths}
    methods = configured_methods(config, keys.values())
    reward_model = RewardModel.load(config["reward_model"], world_dir, load_options(config))
    in_world = world_name(config["reward_model"]) is not None
    frames = [evaluate_reward(path, reward_model, *keys[key], world_score=in_world)
              for key, path in generation_paths.items()]
    metrics = summarize_rewards(frames, methods)
    write_parquet(pd.concat(frames, ignore_index=True), out_scores_path)
    write_csv(metrics, out_metrics_path)
    for row in metrics.itertuples():
        log.info("%s/%s: reward %.3f ± %.3f (n=%d)", row.model, row.method, row.reward_mean, row.reward_se, row.n)
    return metrics
