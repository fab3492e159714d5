"""What alpaca_eval's length-controlled GLM needs besides the annotations, made for our own instructions.

``length_controlled_v1`` reads ``df_gamed.csv``: the instruction difficulty of every instruction, and the
annotations of two *length-gamed* baselines (the reference model asked to be verbose, and to be
concise), toward whose fit the GLM is regularised so that it learns what length alone buys from the
judge. The real file holds them for AlpacaEval's 805 instructions; for the tiny world's instructions we
make both the way alpaca_eval made its own:

- gamed baselines: each reference with one to three sentences of filler appended (sentences that say
  nothing about the film), and cut to its first sentence, judged against the reference by the same
  judge: what length alone buys from it;
- instruction difficulty: the per-instruction effect of one logistic model fitted jointly to every
  generator's annotations (the gamed baselines and every evaluated generation), with a strength and a
  length slope per generator; harder instructions get a higher difficulty.

The file has alpaca_eval's columns (``model``, ``index``, ``instruction_difficulty``, ``preference`` in
[0, 1], ``std_delta_len``, ``not_gamed_baseline``), its first rows one per instruction in order, as
alpaca_eval's lookup by row label expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from ..artifacts import ArtifactError, write_text
from ..world.corpus import filler

VERBOSE, CONCISE = "reference_verbose", "reference_concise"


def gamed_outputs(references: list[dict], seed: int) -> dict[str, list[dict]]:
    """Verbose and concise variants of the reference outputs, as alpaca_eval model outputs."""
    rng = np.random.default_rng(seed)
    verbose, concise = [], []
    for ref in references:
        text = ref["output"]
        verbose.append({**ref, "generator": VERBOSE, "output": f"{text} {filler(rng, int(rng.integers(1, 4)))}"})
        first = text.split(" . ")[0].rstrip(" .")
        concise.append({**ref, "generator": CONCISE, "output": f"{first} ."})
    return {VERBOSE: verbose, CONCISE: concise}


def check_instruction_index(prompt_ids) -> None:
    """alpaca_eval looks the difficulty of instruction ``i`` up at row label ``i``: ids must be 0..n-1."""
    ids = sorted(int(i) for i in prompt_ids)
    if ids != list(range(len(ids))):
        raise ArtifactError("the AlpacaEval prompt set's prompt_id must be 0..n-1 (the row of each instruction), "
                            f"got {ids[:5]}...")


def _features(annotations: pd.DataFrame) -> pd.DataFrame:
    """Preference in [0, 1] and alpaca_eval's standardised length difference (reference - model)."""
    delta = annotations["output_1"].str.len() - annotations["output_2"].str.len()
    std = delta.std()
    return pd.DataFrame({"index": annotations.index.astype(int), "preference": annotations["preference"] - 1.0,
                         "std_delta_len": delta / std if std > 0 else delta * 0.0})


def fit_difficulty(by_generator: dict[str, pd.DataFrame], n_instructions: int) -> np.ndarray:
    """Instruction difficulty from all generators' annotations (indexed by instruction): a logistic model
    of the soft preference on a strength and a length slope per generator and one effect per instruction
    (L2-regularised, so an instruction seen little stays near 0); difficulty = minus that effect."""
    rows = []
    names = sorted(by_generator)
    for g, name in enumerate(names):
        f = _features(by_generator[name]).dropna(subset=["preference"])
        f["generator"] = g
        rows.append(f)
    data = pd.concat(rows, ignore_index=True)
    n_gen = len(names)
    x = np.zeros((len(data), 2 * n_gen + n_instructions))
    at = np.arange(len(data))
    x[at, data["generator"]] = 1.0
    x[at, n_gen + data["generator"]] = np.tanh(data["std_delta_len"])
    x[at, 2 * n_gen + data["index"]] = 1.0
    p = data["preference"].to_numpy(float)
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000)
    model.fit(np.vstack([x, x]), np.r_[np.ones(len(p)), np.zeros(len(p))], sample_weight=np.r_[p, 1 - p])
    effect = model.coef_[0][2 * n_gen:]
    return -(effect - effect.mean())


def gamed_frame(gamed_annotations: dict[str, pd.DataFrame], difficulty: np.ndarray) -> pd.DataFrame:
    """The rows of ``df_gamed.csv``: the verbose baseline's block first (one row per instruction, in order)."""
    blocks = []
    for name in (VERBOSE, CONCISE):
        f = _features(gamed_annotations[name])
        f.insert(0, "model", name)
        f["instruction_difficulty"] = difficulty[f["index"]]
        f["not_gamed_baseline"] = False
        blocks.append(f)
    frame = pd.concat(blocks, ignore_index=True)
    return frame[["model", "index", "instruction_difficulty", "preference", "std_delta_len", "not_gamed_baseline"]]


def write_gamed(frame: pd.DataFrame, path: str | Path) -> Path:
    write_text(frame.to_csv(index=False), path)
    return Path(path)
