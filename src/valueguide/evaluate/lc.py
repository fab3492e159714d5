"""The length-controlled win rate by alpaca_eval's own code, and its bootstrap over instructions.

Apart from ``alpaca`` (which judges) so that worker processes can compute the bootstraps of several
generators side by side without importing torch: each is hundreds of GLM fits, a minute in all for the
tiny world's fourteen generators on one core.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from ..artifacts import ArtifactError
from . import keep_root_log_level

with keep_root_log_level():
    from alpaca_eval.metrics import get_winrate, glm_winrate

log = logging.getLogger(__name__)

BOOTSTRAP = ("lc_bootstrap_se", "lc_low", "lc_high")
GLM_COLUMNS = ["instruction", "output_1", "generator_1", "output_2", "generator_2", "preference", "annotator"]


@contextmanager
def _local_hub_files(files: dict[str, Path]):
    """Serve the files alpaca_eval's GLM would download from the hub from local paths instead."""
    def download(repo_id, filename, **_):
        if filename not in files:
            raise ArtifactError(f"alpaca_eval asked the hub for {repo_id}/{filename}, which this run does not provide")
        return str(files[filename])

    with mock.patch.object(glm_winrate, "hf_hub_download", download):
        yield


IDENTICAL_NOTE = ("every output is its instruction's reference: alpaca_eval's own baseline, "
                  "LC 50 by construction (no length difference to control)")
SAME_LENGTH_NOTE = ("every output is as long as its reference: alpaca_eval's GLM cannot scale the length "
                    "difference (0/0), so no LC")


def win_rates(annotations: pd.DataFrame, glm: str, gamed_path: str | Path, cross_validate: bool = True) -> dict:
    """Win rate and length-controlled win rate (percent), by alpaca_eval's code.

    ``annotations`` is indexed by instruction index (prompt_id); the GLM adds ``glm_preference`` to it
    (NaN where left out). Instructions without a preference are left out of both rates, as alpaca_eval's
    annotators leave them out of the annotations its metrics read. Outputs identical to the references
    are scored as alpaca_eval scores its own baseline (LC 50); outputs all as long as their references
    get no LC, as the GLM's scaled length difference is 0/0 there (each with ``lc_note`` saying so).
    The GLM cross-validates its penalty over folds of instructions: with fewer instructions than folds
    the length-controlled win rate is NaN (logged), the plain win rate still computed. Without
    ``cross_validate`` it takes alpaca_eval's own fixed penalty instead (C = 100), five times faster.
    alpaca_eval's warning of a GLM that moved a win rate to extremes stays on for the estimate itself,
    and off for the bootstrap's resamples (which call this without ``cross_validate``).
    """
    judged_rows = annotations["preference"].notna().to_numpy()
    judged = annotations[judged_rows].copy()
    metrics = _win_rates_of_judged(judged, glm, gamed_path, cross_validate)
    if "glm_preference" in judged:
        column = np.full(len(annotations), np.nan)
        column[judged_rows] = judged["glm_preference"].to_numpy()
        annotations["glm_preference"] = column
    return metrics


def _win_rates_of_judged(judged: pd.DataFrame, glm: str, gamed_path: str | Path, cross_validate: bool) -> dict:
    """``win_rates`` of annotations that all have a preference."""
    n_splits = glm_winrate.GLM_INFO[glm]["kwargs"]["n_splits"]
    no_lc = {"length_controlled_winrate": float("nan"), "lc_standard_error": float("nan")}
    if len(judged) < n_splits:
        log.warning("%d instructions: alpaca_eval's GLM needs at least %d; length-controlled win rate is NaN",
                    len(judged), n_splits)
        return {**get_winrate(judged), **no_lc}
    if (judged["output_1"] == judged["output_2"]).all():
        judged["generator_2"] = judged["generator_1"]  # what alpaca_eval's GLM recognises as its baseline
        note = IDENTICAL_NOTE
    elif (judged["output_1"].str.len() == judged["output_2"].str.len()).all():
        return {**get_winrate(judged), **no_lc, "lc_note": SAME_LENGTH_NOTE}
    else:
        note = ""
    with _local_hub_files({"df_gamed.csv": Path(gamed_path)}), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's deprecations inside alpaca_eval
        warnings.filterwarnings("ignore", "Inconsistent values: penalty=l1", UserWarning)
        info = glm_winrate.GLM_INFO[glm]
        if not cross_validate:
            info = {**info, "kwargs": {**info["kwargs"], "n_splits": 0}}
        metrics = glm_winrate.get_length_controlled_winrate(judged, glm_name=glm, save_weights_dir=None,
                                                            is_warn_extreme_changes=cross_validate, glm_info=info)
    return {**metrics, "lc_note": note} if note else metrics


def bootstrap_lc(annotations: pd.DataFrame, glm: str, gamed_path: str | Path, n: int, seed: int) -> dict:
    """LC's spread over instructions: ``n`` resamples of the instructions with replacement, the GLM refitted
    on each (at alpaca_eval's fixed penalty; the gamed baselines and difficulties fixed, as the
    leaderboard's are). Returns the standard error and the 95 % percentile interval, NaN when ``n`` is 0
    or the GLM cannot be fitted."""
    nan = {k: float("nan") for k in BOOTSTRAP}
    if n <= 0:
        return nan
    rng = np.random.default_rng(seed)
    ids = annotations.index.to_numpy()
    values = []
    for _ in range(n):
        sample = annotations.loc[rng.choice(ids, size=len(ids), replace=True)].copy()
        values.append(win_rates(sample, glm, gamed_path, cross_validate=False)["length_controlled_winrate"])
    values = np.asarray(values, float)
    if np.isnan(values).any():
        return nan
    low, high = np.percentile(values, [2.5, 97.5])
    return {"lc_bootstrap_se": float(values.std(ddof=1)), "lc_low": float(low), "lc_high": float(high)}


def lc_with_interval(annotations: pd.DataFrame, glm: str, gamed_path: str | Path, bootstrap: int,
                     seed: int) -> tuple[dict, dict, pd.Series | None]:
    """``win_rates`` of one generator's annotations, the bootstrap of its LC (``bootstrap_lc``) and the
    ``glm_preference`` column the GLM added (None when it did not run)."""
    metrics = win_rates(annotations, glm, gamed_path)
    spread = bootstrap_lc(annotations[GLM_COLUMNS], glm, gamed_path, bootstrap, seed)
    return metrics, spread, annotations.get("glm_preference")


def lc_of_each(annotations: dict[str, pd.DataFrame], glm: str, gamed_path: str | Path, bootstrap: int, seed: int,
               workers: int = 1) -> dict[str, tuple[dict, dict]]:
    """``(win rates, LC interval)`` of every generator (``lc_with_interval``), in ``workers`` processes
    (spawned: this process may hold torch's threads). Each frame gets its ``glm_preference`` column, as
    alpaca_eval's GLM adds it in one process, and each generator's numbers are the same whatever the
    number of workers."""
    args = [(a, glm, gamed_path, bootstrap, seed) for a in annotations.values()]
    if workers <= 1 or len(args) <= 1:
        results = [lc_with_interval(*a) for a in args]
    else:
        with ProcessPoolExecutor(min(workers, len(args)), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(lc_with_interval, *zip(*args)))
    for frame, (_, _, preference) in zip(annotations.values(), results):
        if preference is not None:
            frame["glm_preference"] = preference
    return {key: (metrics, spread) for key, (metrics, spread, _) in zip(annotations, results)}
