"""Figures: quality by method for each guided model, and quality against what it cost.

Drawn on a bare ``Figure`` (Agg canvas, no pyplot state), so reports render on headless machines
and in parallel jobs; written atomically like every artifact. Methods are told apart by a marker and
colour in one legend, never by text next to a point, so no two labels can overlap; error bars are
95 % intervals (given, or ±1.96 standard errors) and are drawn only where an interval exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from ..artifacts import atomic_path
from .paper import ordered

MARKERS = "osD^vP*Xh<>p"
Z95 = 1.959963984540054


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _styles(methods: list[str]) -> dict[str, dict]:
    colours = [f"C{i % 10}" for i in range(len(methods))]
    return {m: {"marker": MARKERS[i % len(MARKERS)], "color": colours[i]} for i, m in enumerate(methods)}


def interval(sub: pd.DataFrame, value: str, se: str | None, low: str | None = None, high: str | None = None):
    """[2, n] distances below and above each value for ``errorbar``; NaN where no interval exists
    (a standard error of 0 or NaN, as an offline LC has, is not an interval)."""
    v = sub[value].to_numpy(float)
    if low and high and low in sub and high in sub:
        lo, hi = v - sub[low].to_numpy(float), sub[high].to_numpy(float) - v
    elif se and se in sub:
        s = sub[se].to_numpy(float)
        s = np.where(s > 0, s, np.nan)
        lo = hi = Z95 * s
    else:
        lo = hi = np.full_like(v, np.nan)
    return np.vstack([lo, hi])


def plot_by_method(metrics: pd.DataFrame, value: str, se: str, ylabel: str, path: str | Path,
                   low: str | None = None, high: str | None = None, line: tuple[float, str] | None = None) -> None:
    """One panel per guided model: a bar per method (paper order) with its 95 % interval; ``line``:
    (value, label) of a dashed reference line (the best base-policy sample: the headroom shows)."""
    models = list(dict.fromkeys(metrics["model"]))
    fig = Figure(figsize=(1.4 + 2.8 * len(models), 3.6))
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models):
        sub = metrics[metrics["model"] == model].set_index("method")
        methods = ordered(sub.index)
        sub = sub.loc[methods]
        err = interval(sub, value, se, low, high)
        x = np.arange(len(methods))
        ax.bar(x, sub[value], color="tab:blue")
        has = ~np.isnan(err).any(0)
        if has.any():
            ax.errorbar(x[has], sub[value].to_numpy(float)[has], yerr=err[:, has], fmt="none", ecolor="black",
                        capsize=3, linewidth=1)
        ax.set_xticks(x, methods, rotation=45, ha="right")
        ax.set_title(model)
        ax.axhline(0.0, color="black", linewidth=0.6)
        if line is not None:
            ax.axhline(line[0], color="tab:red", linestyle="--", linewidth=1, label=line[1])
    axes[0].set_ylabel(f"{ylabel}\n(bars: 95 % interval)")
    if line is not None:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 0.97),
                   frameon=False, fontsize="small")  # above the panels: it covers no bar
    _save(fig, path)


def _cost_axis(ax, x: np.ndarray) -> None:
    """Linear when the costs span less than a decade; else a log axis with plain numbers (1, 10, 100,
    not 10^0) and few enough ticks not to collide."""
    if np.nanmax(x) < 10 * np.nanmin(x):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        return
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=6))
    ax.xaxis.set_minor_formatter(NullFormatter())
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(formatter)


PASSES_AND_TIME = (("passes", "forward passes per prompt, all models"), ("wall_time", "seconds per prompt"))
TOKENS = (("tokens_encoded", "tokens processed per prompt, all models"),)
COST_FIGURES = (("vs_cost", PASSES_AND_TIME), ("vs_tokens", TOKENS))  # figure name suffix -> its costs


def plot_vs_cost(metrics: pd.DataFrame, value: str, ylabel: str, path: str | Path, se: str | None = None,
                 low: str | None = None, high: str | None = None,
                 costs: tuple[tuple[str, str], ...] = PASSES_AND_TIME) -> None:
    """A row of panels per guided model: quality against each of ``costs`` ((column, axis label); the
    column summed over prompts, drawn per prompt): by default forward passes (left) and wall time (right);
    ``TOKENS``, the tokens every model processed, compares methods at equal compute. One marker per
    method, named in one legend."""
    models = list(dict.fromkeys(metrics["model"]))
    styles = _styles(ordered(metrics["method"]))
    fig = Figure(figsize=(4.75 * len(costs), 2.9 * len(models) + 0.6))
    axes = fig.subplots(len(models), len(costs), sharey="row", squeeze=False)
    for row, model in zip(axes, models):
        sub = metrics[metrics["model"] == model].set_index("method")
        sub = sub.loc[ordered(sub.index)]
        err = interval(sub, value, se, low, high)
        for ax, (cost, xlabel) in zip(row, costs):
            x = (sub[cost] / sub["n"]).to_numpy(float)
            for i, method in enumerate(sub.index):
                yerr = None if np.isnan(err[:, i]).any() else err[:, i:i + 1]
                ax.errorbar(x[i], sub[value].iloc[i], yerr=yerr, linestyle="none", markersize=7, capsize=3,
                            label=method, **styles[method])
            _cost_axis(ax, x)
            ax.set_xlabel(xlabel)
            ax.grid(True, which="major", linewidth=0.3)
        row[0].set_ylabel(f"{model}\n{ylabel}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7 if len(costs) > 1 else 4), fontsize=8,
               frameon=False)
    _save(fig, path)
