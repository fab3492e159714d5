"""Figures: quality by method for each large model, and quality against what it cost.

Drawn on a bare ``Figure`` (Agg canvas, no pyplot state), so reports render on headless machines
and in parallel jobs; written atomically like every artifact.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..artifacts import atomic_path
from .paper import ordered


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_by_method(metrics: pd.DataFrame, value: str, se: str, ylabel: str, path: str | Path) -> None:
    """One panel per large model: a bar per method (paper order) with its standard error."""
    models = list(dict.fromkeys(metrics["model"]))
    fig = Figure(figsize=(1.2 + 2.6 * len(models), 3.4))
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models):
        sub = metrics[metrics["model"] == model].set_index("method")
        methods = ordered(sub.index)
        ax.bar(range(len(methods)), sub.loc[methods, value], yerr=sub.loc[methods, se].fillna(0.0), capsize=3,
               color="tab:blue")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(model)
        ax.axhline(0.0, color="black", linewidth=0.6)
    axes[0].set_ylabel(ylabel)
    _save(fig, path)


def plot_vs_cost(metrics: pd.DataFrame, value: str, ylabel: str, path: str | Path) -> None:
    """Quality against forward passes per prompt and against wall time per prompt, one series per model."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    costs = (("passes", "forward passes per prompt (all models)"), ("wall_time", "wall time per prompt (s)"))
    for ax, (cost, xlabel) in zip(axes, costs):
        for model in dict.fromkeys(metrics["model"]):
            sub = metrics[metrics["model"] == model]
            x = sub[cost] / sub["n"]
            ax.plot(x, sub[value], "o", label=model)
            for xi, yi, method in zip(x, sub[value], sub["method"]):
                ax.annotate(method, (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=8)
    _save(fig, path)
