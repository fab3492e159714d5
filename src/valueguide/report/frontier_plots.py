"""The frontiers, per guided model: gold reward against the distance from the frozen model (KL), and
against inference cost (forward passes and seconds per prompt).

Each sweep of the config (valueguide/frontiers.py) is one colour and marker, its points joined in the
order of its values (VAS's β curve, best-of-N's N curve, DPO's and RL's points); a method outside the
sweeps has a style of its own. Error bars are 95 % intervals. On the KL axis an exact KL (token-level
guidance, fine-tuned models, plain sampling) has its interval too; best-of-N's KL is an upper bound,
drawn at the bound with a caret pointing left (the true KL is below it) and its curve dashed; a method
whose KL is not defined (chunk-level search) is placed in a strip of its own at the right, on the
same reward axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .paper import ordered
from .plots import MARKERS, PASSES_AND_TIME, Z95, _cost_axis, _save, interval


def _styles(methods: list[str], sweeps: list[dict]) -> dict[str, dict]:
    """Per method: colour, marker and legend label; a sweep's points share its sweep's."""
    styles, i = {}, 0
    for sweep in sweeps:
        values = [p["value"] for p in sweep["points"]]
        label = f"{sweep['key']}: {sweep['setting']} {values[0]} … {values[-1]}" if len(values) > 1 else sweep["key"]
        for p in sweep["points"]:
            styles.setdefault(p["method"], {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "label": label})
        i += 1
    for method in methods:
        if method not in styles:
            styles[method] = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)], "label": method}
            i += 1
    return styles


def _kl(sub: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(KL, its 95 % half-interval, whether it is an upper bound) per method; KL NaN where not defined."""
    kind = sub["kl_kind"].astype(str).to_numpy() if "kl_kind" in sub else np.full(len(sub), "undefined")
    mean = sub["kl_mean"].to_numpy(float) if "kl_mean" in sub else np.full(len(sub), np.nan)
    se = sub["kl_se"].to_numpy(float) if "kl_se" in sub else np.full(len(sub), np.nan)
    placed = np.isin(kind, ["exact", "upper_bound"]) & np.isfinite(mean)
    half = np.where((kind == "exact") & (se > 0), Z95 * se, np.nan)
    return np.where(placed, mean, np.nan), half, kind == "upper_bound"


def _point(ax, x, y, yerr, style, labelled: set, **kw) -> None:
    """One method's point; its style's label once per axes."""
    label = style["label"] if style["label"] not in labelled else None
    labelled.add(style["label"])
    ax.errorbar(x, y, yerr=yerr, linestyle="none", markersize=7, capsize=3, color=style["color"],
                marker=style["marker"], label=label, **kw)


def _curves(ax, sub: pd.DataFrame, x: np.ndarray, sweeps: list[dict], styles: dict, dashed=None) -> None:
    """Each sweep's points joined in the order of its values (those placed on this axis)."""
    where = {m: i for i, m in enumerate(sub.index)}
    for sweep in sweeps:
        idx = [where[p["method"]] for p in sweep["points"] if p["method"] in where]
        idx = [i for i in idx if np.isfinite(x[i])]
        if len(idx) > 1:
            style = styles[sweep["points"][0]["method"]]
            line = "--" if dashed is not None and dashed[idx].any() else "-"
            ax.plot(x[idx], sub["reward_mean"].to_numpy(float)[idx], linestyle=line, linewidth=1, color=style["color"])


def _legend(fig: Figure, axes) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3), fontsize=7, frameon=False)


def plot_frontier_kl(metrics: pd.DataFrame, sweeps: list[dict], path: str | Path) -> None:
    """Gold reward against KL from the frozen guided model, for the one guided model of ``metrics``."""
    sub = metrics.set_index("method").loc[ordered(metrics["method"])]
    styles = _styles(list(sub.index), sweeps)
    x, half, bound = _kl(sub)
    y, yerr = sub["reward_mean"].to_numpy(float), interval(sub, "reward_mean", "reward_se")
    undefined = [i for i in range(len(sub)) if not np.isfinite(x[i])]
    fig = Figure(figsize=(7.5, 4.4))
    ratios = [4, max(1.0, 0.45 * len(undefined))] if undefined else [1]
    axes = fig.subplots(1, len(ratios), sharey=True, squeeze=False, gridspec_kw={"width_ratios": ratios})[0]
    ax, labelled = axes[0], set()
    caret = 0.06 * (np.nanmax(x) if np.isfinite(x).any() and np.nanmax(x) > 0 else 1.0)
    for i, method in enumerate(sub.index):
        if not np.isfinite(x[i]):
            continue
        e = None if np.isnan(yerr[:, i]).any() else yerr[:, i:i + 1]
        if bound[i]:  # the true KL lies below the bound: a caret pointing left
            _point(ax, x[i], y[i], e, styles[method], labelled, xerr=caret, xuplims=True)
        else:
            _point(ax, x[i], y[i], e, styles[method], labelled, xerr=None if np.isnan(half[i]) else half[i])
    _curves(ax, sub, x, sweeps, styles, dashed=bound)
    ax.set_xlabel("KL from the frozen guided model (nats per response)\n(best-of-N: its upper bound, caret left)")
    ax.set_ylabel(f"{metrics['model'].iloc[0]}\ngold reward (95 % intervals)")
    ax.grid(True, linewidth=0.3)
    if undefined:
        strip = axes[1]
        for k, i in enumerate(undefined):
            e = None if np.isnan(yerr[:, i]).any() else yerr[:, i:i + 1]
            _point(strip, k, y[i], e, styles[sub.index[i]], labelled)
        strip.set_xticks(range(len(undefined)), [sub.index[i] for i in undefined], rotation=45, ha="right", fontsize=7)
        strip.set_xlim(-0.6, len(undefined) - 0.4)
        strip.set_title("KL n/d", fontsize=8)
    _legend(fig, axes)
    _save(fig, path)


def plot_frontier_cost(metrics: pd.DataFrame, sweeps: list[dict], path: str | Path) -> None:
    """Gold reward against forward passes (left) and seconds (right) per prompt, for one guided model."""
    sub = metrics.set_index("method").loc[ordered(metrics["method"])]
    styles = _styles(list(sub.index), sweeps)
    y, yerr = sub["reward_mean"].to_numpy(float), interval(sub, "reward_mean", "reward_se")
    fig = Figure(figsize=(9.5, 4.2))
    axes = fig.subplots(1, len(PASSES_AND_TIME), sharey=True, squeeze=False)[0]
    labelled: set = set()
    for ax, (cost, xlabel) in zip(axes, PASSES_AND_TIME):
        x = (sub[cost] / sub["n"]).to_numpy(float)
        for i, method in enumerate(sub.index):
            _point(ax, x[i], y[i], None if np.isnan(yerr[:, i]).any() else yerr[:, i:i + 1], styles[method], labelled)
        _curves(ax, sub, x, sweeps, styles)
        _cost_axis(ax, x)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", linewidth=0.3)
    axes[0].set_ylabel(f"{metrics['model'].iloc[0]}\ngold reward (95 % intervals)")
    _legend(fig, axes)
    _save(fig, path)


def plot_frontiers(reward: pd.DataFrame, sweeps: list[dict], out_dir: str | Path) -> list[Path]:
    """``frontier_kl_<model>.png`` and ``frontier_cost_<model>.png`` per guided model; the paths written."""
    written = []
    for model in dict.fromkeys(reward["model"]):
        sub = reward[reward["model"] == model]
        for name, plot in (("kl", plot_frontier_kl), ("cost", plot_frontier_cost)):
            path = Path(out_dir) / f"frontier_{name}_{model}.png"
            plot(sub, sweeps, path)
            written.append(path)
    return written
