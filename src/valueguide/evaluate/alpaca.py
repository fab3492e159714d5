"""AlpacaEval 2.0: outputs in alpaca_eval's format, judged against the references, scored by its code.

The win rate and the length-controlled win rate come from alpaca_eval's own
``get_length_controlled_winrate`` (a GLM that predicts the preference had the two outputs been of
equal length). That function downloads ``df_gamed.csv`` from the hub for two things: the
instruction difficulty of the 805 AlpacaEval instructions, and the annotations of length-gamed
baselines that ``length_controlled_v1`` regularises toward. Offline we hand it a local file instead
(its math untouched):

- ``evaluate.alpaca.gamed_path`` set: that file, e.g. the real ``df_gamed.csv`` for a paper run
  over the 805 instructions (prompt_id = position in the AlpacaEval set);
- unset: a file of zero difficulty for our own instructions, with the GLM ``length_controlled_noreg``
  (no gamed baselines exist for them). Such a length-controlled win rate is comparable only to
  itself (other methods of the same run), not to the public leaderboard.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from ..artifacts import ArtifactError, read_parquet, write_json, write_text
from ..models import load_options
from . import keep_root_log_level, split_key, write_csv
from .judges import make_judge
from .reward_task import cost_frame, cost_summary, read_generations

with keep_root_log_level():
    from alpaca_eval.metrics import get_winrate, glm_winrate

log = logging.getLogger(__name__)

REFERENCE_GENERATOR = "reference"
DATASET = "valueguide"
DEFAULTS = {"glm": "length_controlled_noreg", "gamed_path": None, "judge_cache": None}
RATES = ("length_controlled_winrate", "lc_standard_error", "win_rate", "standard_error", "discrete_win_rate")
COUNTS = ("n_wins", "n_wins_base", "n_draws")


def alpaca_settings(config: dict) -> dict:
    """``config["evaluate"]["alpaca"]`` over the defaults, checked before anything is judged."""
    settings = {**DEFAULTS, **config.get("evaluate", {}).get("alpaca", {})}
    info = glm_winrate.GLM_INFO
    if settings["glm"] not in info:
        raise ValueError(f"evaluate.alpaca.glm: {settings['glm']!r} is not one of alpaca_eval's GLMs {sorted(info)}")
    if info[settings["glm"]]["regularize_to_baseline_lambda"] and not settings["gamed_path"]:
        raise ValueError(
            f"evaluate.alpaca.glm {settings['glm']!r} regularises toward alpaca_eval's length-gamed baselines: "
            "set evaluate.alpaca.gamed_path to alpaca_eval's df_gamed.csv, or use 'length_controlled_noreg'")
    if settings["gamed_path"] and not Path(settings["gamed_path"]).exists():
        raise ArtifactError(f"evaluate.alpaca.gamed_path: {settings['gamed_path']} does not exist")
    return settings


def _records(rows: pd.DataFrame, generator: str, dataset: str) -> list[dict]:
    return [{"instruction": i, "output": o, "generator": generator, "dataset": dataset}
            for i, o in zip(rows["instruction"], rows["output"])]


def reference_outputs(prompts_df: pd.DataFrame, dataset: str = DATASET) -> list[dict]:
    """The prompts' ``reference`` column as alpaca_eval reference outputs, in prompt_id order."""
    rows = prompts_df.sort_values("prompt_id").rename(columns={"prompt": "instruction", "reference": "output"})
    return _records(rows, REFERENCE_GENERATOR, dataset)


def model_outputs(generations_df: pd.DataFrame, prompts_df: pd.DataFrame, generator_name: str,
                  dataset: str = DATASET) -> list[dict]:
    """alpaca_eval ``model_outputs`` records, in prompt_id order: one per prompt, the prompt unrendered."""
    ids = generations_df["prompt_id"]
    if ids.duplicated().any() or set(ids) != set(prompts_df["prompt_id"]):
        raise ArtifactError(f"{generator_name}: the generations are not one per prompt of the prompt set")
    rows = generations_df.merge(prompts_df[["prompt_id", "prompt"]], on="prompt_id", suffixes=("", "_set"))
    if (rows["prompt"] != rows["prompt_set"]).any():
        raise ArtifactError(f"{generator_name}: the generations were made for other prompts than the prompt set")
    rows = rows.sort_values("prompt_id").rename(columns={"prompt": "instruction"})
    return _records(rows, generator_name, dataset)


def write_model_outputs(generations_df: pd.DataFrame, prompts_df: pd.DataFrame, generator_name: str,
                        path: str | Path, dataset: str = DATASET) -> list[dict]:
    """Write ``model_outputs.json`` as the official ``alpaca_eval evaluate --model_outputs`` reads it."""
    records = model_outputs(generations_df, prompts_df, generator_name, dataset)
    write_json(records, path)
    return records


def write_zero_difficulty(prompt_ids, path: str | Path) -> Path:
    """A ``df_gamed.csv`` stand-in: difficulty 0 for every instruction index up to the largest prompt_id.

    alpaca_eval looks the difficulty up by row label, so row ``i`` is instruction ``i``.
    """
    n = int(max(prompt_ids)) + 1
    frame = pd.DataFrame({"model": "none", "index": np.arange(n), "instruction_difficulty": 0.0})
    write_text(frame.to_csv(index=False), path)
    return Path(path)


@contextmanager
def _local_hub_files(files: dict[str, Path]):
    """Serve the files alpaca_eval's GLM would download from the hub from local paths instead."""
    def download(repo_id, filename, **_):
        if filename not in files:
            raise ArtifactError(f"alpaca_eval asked the hub for {repo_id}/{filename}, which this run does not provide")
        return str(files[filename])

    with mock.patch.object(glm_winrate, "hf_hub_download", download):
        yield


def win_rates(annotations: pd.DataFrame, glm: str, gamed_path: str | Path) -> dict:
    """Win rate and length-controlled win rate (percent), by alpaca_eval's code.

    ``annotations`` is indexed by instruction index (prompt_id); the GLM adds ``glm_preference`` to it.
    The GLM cross-validates over folds of instructions: with fewer instructions than folds the
    length-controlled win rate is NaN (logged), the plain win rate still computed.
    """
    n_splits = glm_winrate.GLM_INFO[glm]["kwargs"]["n_splits"]
    if len(annotations) < n_splits:
        log.warning("%d instructions: alpaca_eval's GLM needs at least %d; length-controlled win rate is NaN",
                    len(annotations), n_splits)
        return {**get_winrate(annotations), "length_controlled_winrate": float("nan"), "lc_standard_error": float("nan")}
    with _local_hub_files({"df_gamed.csv": Path(gamed_path)}), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's deprecations inside alpaca_eval
        return glm_winrate.get_length_controlled_winrate(annotations, glm_name=glm, save_weights_dir=None,
                                                         is_warn_extreme_changes=False)


def _annotation_records(annotations: pd.DataFrame) -> list[dict]:
    """Plain JSON records (NaN -> null, numpy -> Python), as alpaca_eval writes annotations.json."""
    return json.loads(annotations.to_json(orient="records"))


def run_evaluate_alpaca(config: dict, generation_paths: dict[str, str], prompts_path, out_dir, judge: str = "local",
                        world_dir=None) -> pd.DataFrame:
    """Judge every ``"model/method"`` generation file against the prompts' references.

    Writes ``reference_outputs.json``, ``{model}/{method}/model_outputs.json`` and ``annotations.json``,
    and ``metrics.csv`` (one row per (model, method): win rates, standard errors, average length in
    characters, and the cost columns of the generations).
    """
    if not generation_paths:
        raise ValueError("no generations to evaluate")
    keys = {key: split_key(key) for key in generation_paths}
    settings = alpaca_settings(config)
    out_dir = Path(out_dir)
    cache = settings["judge_cache"] or out_dir / "judge_cache.json"
    judge_ = make_judge(judge, config["reward_model"], world_dir, load_options(config), cache)

    prompts = read_parquet(prompts_path, required=["prompt_id", "prompt", "reference"])
    if prompts.empty:
        raise ArtifactError(f"{prompts_path} holds no prompts")
    references = reference_outputs(prompts)
    write_json(references, out_dir / "reference_outputs.json")
    gamed = settings["gamed_path"] or write_zero_difficulty(prompts["prompt_id"], out_dir / "instruction_difficulty.csv")
    index = sorted(prompts["prompt_id"].astype(int))

    rows = []
    for key, path in generation_paths.items():
        model, method = keys[key]
        gens = read_generations(path)
        outputs = write_model_outputs(gens, prompts, f"{model}_{method}", out_dir / model / method / "model_outputs.json")
        annotations = judge_.annotate(outputs, references)
        if list(annotations["instruction"]) != [r["instruction"] for r in outputs]:
            raise RuntimeError(f"{key}: the judge did not return one annotation per instruction, in order")
        if annotations["preference"].isna().any():  # alpaca_eval's metrics leave these out, as its evaluate does
            log.warning("%s: %d instructions have no preference", key, annotations["preference"].isna().sum())
        annotations.index = index
        metrics = win_rates(annotations, settings["glm"], gamed)
        write_json(_annotation_records(annotations), out_dir / model / method / "annotations.json")
        rows.append({"model": model, "method": method, "judge": judge_.name, "glm": settings["glm"],
                     "n": int(metrics["n_total"]), **{k: float(metrics[k]) for k in RATES},
                     **{k: int(metrics[k]) for k in COUNTS},
                     "avg_length": float(np.mean([len(r["output"]) for r in outputs])), **cost_summary(gens)})
        log.info("%s: LC %.2f, WR %.2f ± %.2f", key, metrics["length_controlled_winrate"], metrics["win_rate"],
                 metrics["standard_error"])
    table = cost_frame(rows)
    write_csv(table, out_dir / "metrics.csv")
    return table
