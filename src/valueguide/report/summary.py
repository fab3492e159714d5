"""The printed summary: what the world is and how the base policy's rewards spread."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..artifacts import read_json, read_parquet, write_text
from ..world.corpus import text_score
from . import name_heading


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _agreement(samples) -> float:
    """Pearson r of the gold reward and the world's own score over the samples' texts (prompt + response)."""
    scores = np.array([text_score(p + r) for p, r in zip(samples["prompt"], samples["response"])])
    return float(np.corrcoef(scores, samples["reward"].to_numpy())[0, 1])


def render_summary(samples_path: str | Path, world_summary_path: str | Path | None) -> str:
    samples = read_parquet(samples_path, required=["prompt_id", "prompt", "response", "reward", "response_ids", "finished"])
    r = samples["reward"]
    parts = ["# valueguide summary", "", "## Base-policy samples (stage sample)", "",
             _table(["responses", "prompts", "reward mean", "std", "min", "max", "finished", "mean tokens"],
                    [[str(len(samples)), str(samples.prompt_id.nunique()), f"{r.mean():.3f}", f"{r.std():.3f}",
                      f"{r.min():.3f}", f"{r.max():.3f}", f"{samples.finished.mean():.1%}",
                      f"{samples.response_ids.map(len).mean():.1f}"]])]
    if world_summary_path:
        world = read_json(world_summary_path)
        rows = [[name, str(s["parameters"]), f"{s['heldout_loss']:.3f}", f"{s['train_seconds']:.0f}"]
                for name, s in world["models"].items()]
        parts += ["", "## Tiny world", "",
                  _table(["model", "parameters", "held-out loss (nats/token)", "train s"], rows), "",
                  f"Gold reward model: held-out R² {world['reward_model']['heldout_r2']:.3f}, "
                  f"sign right {world['reward_model']['heldout_sign_accuracy']:.1%} on the corpus's reviews; on "
                  f"the base policy's samples it agrees with the world's own score at r = {_agreement(samples):.3f}."]
    return "\n".join(parts) + "\n"


def _num(value, digits: int = 3) -> str:
    """A metric, or a dash where the held-out set was too small to measure it (null)."""
    return "–" if value is None else f"{value:.{digits}f}"


Z95 = 1.959963984540054
CHANCE_MARGIN = 0.05  # accuracy under 0.55: a rank correlation (2 · accuracy − 1) under 0.1, less than "small"


def accuracy_interval(accuracy: float, pairs: int | None) -> tuple[float, float] | None:
    """The 95 % normal interval of a share of ``pairs`` pairs ranked right (None without a count).
    Pairs that share a response are not independent, so the true interval is wider: the test below
    flags a value near chance on this interval or on ``CHANCE_MARGIN``, whichever says so first."""
    if not pairs:
        return None
    half = Z95 * math.sqrt(accuracy * (1 - accuracy) / pairs)
    return accuracy - half, accuracy + half


def near_chance(accuracy: float | None, pairs: int | None) -> bool:
    """Whether a value ranks held-out pairs hardly better than a coin: its 95 % interval includes 0.5,
    or it ranks fewer than 0.5 + ``CHANCE_MARGIN`` of them right."""
    if accuracy is None:
        return False
    interval = accuracy_interval(accuracy, pairs)
    return accuracy < 0.5 + CHANCE_MARGIN or (interval is not None and interval[0] <= 0.5)


def chance_note(name: str, accuracy: float | None, pairs: int | None) -> str:
    """A sentence for a value near chance (``near_chance``); empty otherwise."""
    if not near_chance(accuracy, pairs):
        return ""
    interval = accuracy_interval(accuracy, pairs)
    spread = f", 95 % interval {interval[0]:.1%} to {interval[1]:.1%} over {pairs} pairs" if interval else ""
    return (f"**The {name} value is near chance**: it orders {accuracy:.1%} of held-out pairs of base-policy "
            f"samples like their rewards{spread}; a method that ranks by it picks little better than at random.")


def render_fits(value_metrics_path, implicit_metrics_path) -> str:
    value = read_json(value_metrics_path)
    implicit = read_json(implicit_metrics_path)
    explicit_acc, implicit_acc = value.get("pairwise_accuracy"), implicit.get("heldout_accuracy")
    rows = [
        ["explicit (TD(λ) value head)", _num(explicit_acc), _num(value.get("pairwise_accuracy_gap_gt_1")),
         _num(value.get("value_r2")), _num(value.get("train_seconds"), 0)],
        ["implicit (DPO log-ratio)", _num(implicit_acc), _num(implicit.get("heldout_accuracy_gap_gt_1")), "–",
         _num(implicit.get("train_time_s"), 0)],
    ]
    notes = [note for note in (chance_note("explicit", explicit_acc, value.get("pairwise_pairs")),
                               chance_note("implicit", implicit_acc, implicit.get("n_heldout_pairs"))) if note]
    if notes:
        notes.append(f"(Near chance: the 95 % interval of the pairwise accuracy includes 50 %, or the accuracy is "
                     f"under {0.5 + CHANCE_MARGIN:.0%}, a rank correlation 2 · accuracy − 1 under "
                     f"{2 * CHANCE_MARGIN:.1f}.)")
    return "\n".join(["## Value functions (held-out)", "",
                      _table(["value", "pairwise accuracy", "gap > 1", "R² vs Monte-Carlo", "train s"], rows),
                      *(["", " ".join(notes)] if notes else [])]) + "\n"


def run_summary(samples_path, world_summary_path, out_path, value_metrics_path=None, implicit_metrics_path=None,
                config_name: str | None = None) -> str:
    text = name_heading(render_summary(samples_path, world_summary_path or None), config_name)
    if value_metrics_path and implicit_metrics_path:
        text += "\n" + render_fits(value_metrics_path, implicit_metrics_path)
    write_text(text, out_path)
    return text
