"""What holds across runs: the same setting run with several seeds (``make seeds``), side by side.

One run's digits move with the seed and the CPU; the README states ranges over seeds and how often
each of the report's claims held. Each run is a results folder whose report was written
(``report/claims.csv``, and ``scores/reward_metrics.csv`` or ``alpaca_eval/metrics.csv``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import ArtifactError, read_json
from .paper import ordered
from .tables import markdown

# metric files of a run, and the columns whose range is shown
QUALITY = {"scores/reward_metrics.csv": ("gold reward", ["reward_mean"]),
           "alpaca_eval/metrics.csv": ("AlpacaEval, LC / win rate (%)", ["length_controlled_winrate", "win_rate"])}


VERDICTS = ("holds", "not resolved", "fails")  # the claims' verdicts (report/claims.py), in this order


def _read(run: Path, name: str) -> pd.DataFrame:
    path = run / name
    if not path.exists():
        raise ArtifactError(f"{path} is missing: run the setting to the end first (make run, make seeds)")
    return pd.read_csv(path)


def _span(values: pd.Series) -> str:
    return f"{values.min():.2f} – {values.max():.2f}" if values.nunique() > 1 else f"{values.iloc[0]:.2f}"


def quality_ranges(runs: list[Path]) -> str:
    """Per (method, model): min – max over the runs of each quality column."""
    name = next((n for n in QUALITY if (runs[0] / n).exists()), None)
    if name is None:
        raise ArtifactError(f"{runs[0]} holds no metrics ({' or '.join(QUALITY)})")
    title, columns = QUALITY[name]
    frame = pd.concat([_read(run, name).assign(run=str(run)) for run in runs])
    if "world_score_mean" in frame and frame["world_score_mean"].notna().all():  # the tiny world's own score
        title, columns = f"{title} / the world's own score", [*columns, "world_score_mean"]
    models = list(dict.fromkeys(frame.model))
    rows = []
    for method in ordered(frame.method):
        cells = []
        for model in models:
            cell = frame[(frame.method == method) & (frame.model == model)]
            cells.append(" / ".join(_span(cell[c]) for c in columns) if len(cell) == len(runs) else "–")
        rows.append([method, *cells])
    header = f"{title}, range over {len(runs)} runs"
    text = f"{header}\n\n" + markdown(["method", *models], rows)
    if "lc_bootstrap_se" in frame:
        text += (f"\n\nLC bootstrap standard error, over every cell of the {len(runs)} runs: "
                 f"{_span(frame.lc_bootstrap_se)} points")
    return text


def claim_verdicts(runs: list[Path]) -> str:
    """Per (claim, model): how often each verdict came out, and the paired difference's range."""
    frame = pd.concat([_read(run, "report/claims.csv").assign(run=str(run)) for run in runs])
    models = list(dict.fromkeys(frame.model))
    rows = []
    for claim in dict.fromkeys(frame.claim):
        cells = []
        for model in models:
            cell = frame[(frame.claim == claim) & (frame.model == model)]
            counts = cell.verdict.value_counts()
            verdicts = ", ".join(f"{verdict} {counts[verdict]}/{len(runs)}" for verdict in VERDICTS if verdict in counts)
            cells.append(f"{verdicts} ({_span(cell.difference)})" if len(cell) else "–")
        rows.append([claim, *cells])
    return f"Claims: verdicts over {len(runs)} runs (paired difference, range)\n\n" + markdown(
        ["claim", *models], rows)


def headroom_ranges(runs: list[Path]) -> str:
    """Per model: the best method's share of the way from base to the ceiling, its range over the runs."""
    frame = pd.concat([_read(run, "report/headroom.csv") for run in runs])
    rows = [[model, f"{_span(sub.share * 100)} %", ", ".join(dict.fromkeys(sub.best_method)), _span(sub.ceiling)]
            for model, sub in frame.groupby("model", sort=False)]
    return f"Headroom: the best method's share of the way from base to the ceiling, range over {len(runs)} runs\n\n" + \
        markdown(["model", "share of the way", "best method", "ceiling (best base-policy sample)"], rows)


# the value fits' held-out numbers a run's summary prints: (file, key, label)
FITS = (("value_metrics.json", "pairwise_accuracy", "explicit value: pairwise accuracy"),
        ("value_metrics.json", "value_r2", "explicit value: R² against Monte-Carlo values"),
        ("implicit/metrics.json", "heldout_accuracy", "implicit value: held-out pairwise accuracy"))


def fit_ranges(runs: list[Path]) -> str:
    """The value fits' held-out numbers, their range over the runs."""
    rows = []
    for name, key, label in FITS:
        values = pd.Series([read_json(run / name).get(key) for run in runs], dtype=float)
        rows.append([label, _span(values)])
    return f"Value functions (held-out), range over {len(runs)} runs\n\n" + markdown(["number", "range"], rows)


def seed_report(runs: list[str | Path]) -> str:
    runs = [Path(r) for r in runs]
    parts = [quality_ranges(runs)]
    if all((run / name).exists() for run in runs for name, _, _ in FITS):
        parts.append(fit_ranges(runs))
    if (runs[0] / "report/headroom.csv").exists():
        parts.append(headroom_ranges(runs))
    return "\n\n".join(parts + [claim_verdicts(runs)]) + "\n"
