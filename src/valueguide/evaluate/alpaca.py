"""AlpacaEval 2.0: outputs in alpaca_eval's format, judged against the references, scored by its code.

The win rate and the length-controlled (LC) win rate come from alpaca_eval's own
``get_length_controlled_winrate`` (a GLM that predicts the preference had the two outputs been of
equal length), by default ``length_controlled_v1``, as the leaderboard computes it. That function
downloads ``df_gamed.csv`` from the hub: the instruction difficulty of the 805 AlpacaEval instructions
and the annotations of two length-gamed baselines that the GLM is regularised toward. Offline we hand
it a local file instead (its math untouched):

- ``evaluate.alpaca.gamed_path`` set: that file, e.g. the real ``df_gamed.csv`` for a paper run over
  the 805 instructions (prompt_id = position in the AlpacaEval set);
- unset: one made for our own instructions the way alpaca_eval made its own (``gamed.py``): verbose
  and concise variants of the references judged by the same judge, and a difficulty fitted to every
  generator's annotations. Such an LC is comparable within a run, never to the leaderboard's.

Every LC comes with a bootstrap over instructions (``bootstrap`` resamples, the GLM refitted on each):
a 95 % percentile interval and its standard error. alpaca_eval's own ``lc_standard_error`` (the spread
of the predicted preferences) is kept beside it, but is not an uncertainty of the LC.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import ArtifactError, read_parquet, write_json, write_text
from ..models import load_options
from . import keep_root_log_level, split_key, write_csv
from .gamed import check_instruction_index, fit_difficulty, gamed_frame, gamed_outputs, write_gamed
from .judges import make_judge
from .lc import lc_of_each
from .reward_task import configured_methods, cost_frame, cost_summary, kl_summary, read_generations

with keep_root_log_level():
    from alpaca_eval.metrics import glm_winrate

log = logging.getLogger(__name__)

REFERENCE_GENERATOR = "reference"
DATASET = "valueguide"
DEFAULTS = {"glm": "length_controlled_v1", "gamed_path": None, "judge_cache": None, "bootstrap": 200}
RATES = ("length_controlled_winrate", "lc_standard_error", "win_rate", "standard_error", "discrete_win_rate")
COUNTS = ("n_wins", "n_wins_base", "n_draws")


def alpaca_settings(config: dict) -> dict:
    """``config["evaluate"]["alpaca"]`` over the defaults, checked before anything is judged."""
    settings = {**DEFAULTS, **(config.get("evaluate", {}).get("alpaca") or {})}
    info = glm_winrate.GLM_INFO
    if settings["glm"] not in info:
        raise ValueError(f"evaluate.alpaca.glm: {settings['glm']!r} is not one of alpaca_eval's GLMs {sorted(info)}")
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


def _annotation_records(annotations: pd.DataFrame) -> list[dict]:
    """Plain JSON records (NaN -> null, numpy -> Python), as alpaca_eval writes annotations.json."""
    return json.loads(annotations.to_json(orient="records"))


def run_evaluate_alpaca(config: dict, generation_paths: dict[str, str], prompts_path, out_dir, judge: str = "local",
                        world_dir=None, workers: int = 1) -> pd.DataFrame:
    """Judge every ``"model/method"`` generation file against the prompts' references.

    Writes ``reference_outputs.json``, ``{model}/{method}/model_outputs.json`` and ``annotations.json``,
    ``df_gamed.csv`` (made here unless ``gamed_path`` is given) and ``metrics.csv`` (one row per (model,
    method): win rates, standard errors, LC's bootstrap interval, ``lc_note`` where the LC is alpaca_eval's
    baseline's or missing (``lc.win_rates``), average length in characters, and the cost columns of the
    generations, and their KL from the frozen model, ``reward_task.kl_summary``). ``workers`` processes compute
    the LC bootstraps.
    """
    if not generation_paths:
        raise ValueError("no generations to evaluate")
    keys = {key: split_key(key) for key in generation_paths}
    settings = alpaca_settings(config)
    out_dir = Path(out_dir)
    cache = settings["judge_cache"] or out_dir / "judge_cache.json"
    judge_ = make_judge(judge, config["reward_model"], world_dir, load_options(config), cache)
    methods = configured_methods(config, keys.values())

    prompts = read_parquet(prompts_path, required=["prompt_id", "prompt", "reference"])
    if prompts.empty:
        raise ArtifactError(f"{prompts_path} holds no prompts")
    check_instruction_index(prompts["prompt_id"])
    references = reference_outputs(prompts)
    write_json(references, out_dir / "reference_outputs.json")
    index = sorted(prompts["prompt_id"].astype(int))

    def judged(outputs: list[dict], name: str) -> pd.DataFrame:
        annotations = judge_.annotate(outputs, references)
        if list(annotations["instruction"]) != [r["instruction"] for r in outputs]:
            raise RuntimeError(f"{name}: the judge did not return one annotation per instruction, in order")
        if annotations["preference"].isna().any():  # left out of the win rates, as alpaca_eval's annotators do
            log.warning("%s: %d instructions have no preference", name, annotations["preference"].isna().sum())
        annotations.index = index
        return annotations

    by_key, outputs_by_key = {}, {}
    for key, path in generation_paths.items():
        model, method = keys[key]
        gens = read_generations(path)
        outputs_by_key[key] = write_model_outputs(gens, prompts, f"{model}_{method}",
                                                  out_dir / model / method / "model_outputs.json")
        by_key[key] = (judged(outputs_by_key[key], key), gens)
    if settings["gamed_path"]:
        gamed, difficulty = settings["gamed_path"], "given"
    else:
        gamed_annotations = {name: judged(outputs, name)
                             for name, outputs in gamed_outputs(references, config["seed"]).items()}
        population = {**gamed_annotations, **{key: a for key, (a, _) in by_key.items()}}
        frame = gamed_frame(gamed_annotations, fit_difficulty(population, len(index)))
        gamed, difficulty = write_gamed(frame, out_dir / "df_gamed.csv"), "fitted"

    rows = []
    lc = lc_of_each({key: annotations for key, (annotations, _) in by_key.items()}, settings["glm"], gamed,
                    settings["bootstrap"], config["seed"], workers)
    for key, (annotations, gens) in by_key.items():
        model, method = keys[key]
        metrics, spread = lc[key]
        write_json(_annotation_records(annotations), out_dir / model / method / "annotations.json")
        rows.append({"model": model, "method": method, "judge": judge_.name, "glm": settings["glm"],
                     "difficulty": difficulty, "n": int(metrics["n_total"]), **{k: float(metrics[k]) for k in RATES},
                     **spread, **{k: int(metrics[k]) for k in COUNTS}, "lc_note": metrics.get("lc_note", ""),
                     "avg_length": float(np.mean([len(r["output"]) for r in outputs_by_key[key]])),
                     **kl_summary(gens, methods[method]), **cost_summary(gens)})
        log.info("%s: LC %.2f [%.2f, %.2f], WR %.2f ± %.2f", key, metrics["length_controlled_winrate"],
                 spread["lc_low"], spread["lc_high"], metrics["win_rate"], metrics["standard_error"])
    table = cost_frame(rows)
    write_csv(table, out_dir / "metrics.csv")
    return table
