"""The paper's qualitative claims, tested per guided model with paired statistics over prompts.

Claims: every guided method beats ``base``; IVG beats each of its two parts, EFT (its token level) and
CBS with the explicit value (its chunk level). Each is a paired difference over the same prompts
(method minus the other, per prompt: the gold reward, or for AlpacaEval the judge's preference for the
output over the reference), its mean ± standard error, and a verdict: *holds* when its 95 % interval
lies above 0, *fails* when it lies below, *not resolved* otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import read_json, read_parquet
from .paper import ordered

IVG_PARTS = (("ivg", "eft"), ("ivg", "cbs_explicit"))
# VAS's and IVG's case against fine-tuning, at the default settings (report/finetuning.py: on the frontier)
AGAINST_FINETUNING = (("vas", "dpo"), ("vas", "rl"), ("ivg", "dpo"), ("ivg", "rl"))
Z95 = 1.959963984540054


def claim_pairs(methods, sweep_points=()) -> list[tuple[str, str]]:
    """(method, other) for every claim these methods allow, in the paper's order; ``sweep_points``, the
    methods a frontier sweep added, make no claim of their own against base (report/finetuning.py's do)."""
    present = ordered(methods)
    pairs = [(m, "base") for m in present if m != "base" and "base" in present and m not in sweep_points]
    return pairs + [(a, b) for a, b in IVG_PARTS + AGAINST_FINETUNING if a in present and b in present]


def verdict(mean: float, se: float) -> str:
    if not np.isfinite(se) or se == 0:
        return "holds" if mean > 0 else "fails" if mean < 0 else "not resolved"
    return "holds" if mean - Z95 * se > 0 else "fails" if mean + Z95 * se < 0 else "not resolved"


def paired_difference(table: pd.DataFrame, method: str, other: str) -> dict:
    """``table``: prompts × methods. n, mean and standard error of ``method`` minus ``other`` over the prompts
    both have."""
    diff = (table[method] - table[other]).dropna()
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"n": len(diff), "difference": float(diff.mean()), "se": se}


def per_model(values: pd.DataFrame):
    """(model, prompts × methods table) for each guided model of ``values``, in their order."""
    for model in dict.fromkeys(values["model"]):
        yield model, values[values["model"] == model].pivot(index="prompt_id", columns="method", values="value")


def paired_claims(values: pd.DataFrame, sweep_points=()) -> pd.DataFrame:
    """``values``: one row per (model, method, prompt_id) with ``value``. One row per (model, claim)."""
    rows = []
    for model, table in per_model(values):
        for method, other in claim_pairs(table.columns, sweep_points):
            pair = paired_difference(table, method, other)
            rows.append({"model": model, "claim": f"{method} > {other}", **pair,
                         "verdict": verdict(pair["difference"], pair["se"])})
    return pd.DataFrame(rows, columns=["model", "claim", "n", "difference", "se", "verdict"])


def reward_values(scores_path: str | Path) -> pd.DataFrame:
    scores = read_parquet(scores_path, required=["model", "method", "prompt_id", "reward"])
    return scores.rename(columns={"reward": "value"})[["model", "method", "prompt_id", "value"]]


def preference_values(metrics: pd.DataFrame, alpaca_dir: str | Path) -> pd.DataFrame:
    """The judge's preference for each output over its reference, in [0, 1], from the annotations."""
    frames = []
    for r in metrics.itertuples():
        annotations = pd.DataFrame(read_json(Path(alpaca_dir) / r.model / r.method / "annotations.json"))
        frames.append(pd.DataFrame({"model": r.model, "method": r.method, "prompt_id": np.arange(len(annotations)),
                                    "value": annotations["preference"].astype(float) - 1.0}))
    return pd.concat(frames, ignore_index=True)


def ivg_parts_note(claims: pd.DataFrame, explicit_accuracy: float | None, implicit_accuracy: float | None,
                   world_scores: dict[tuple[str, str], float] | None = None) -> str:
    """Where IVG did not beat one of its parts, what was measured beside it: each part's value ranked
    on held-out pairs and, in the tiny world, the world's own score of IVG's and the part's outputs
    (``world_scores``: (model, method) -> mean), which tells a worse text from a text the gold reward
    model misjudges."""
    parts = [f"{a} > {b}" for a, b in IVG_PARTS]
    missed = claims[claims["claim"].isin(parts) & (claims["verdict"] != "holds")]
    if missed.empty:
        return ""
    lines = [f"IVG does not beat a part here: "
             + "; ".join(f"{r.claim} on {r.model} ({r.verdict})" for r in missed.itertuples()) + "."]
    if explicit_accuracy is not None and implicit_accuracy is not None:
        lines.append(f"Its parts' values rank held-out pairs of base-policy samples {explicit_accuracy:.1%} right "
                     f"(explicit, its chunk level) and {implicit_accuracy:.1%} (implicit, its token level).")
    compared = []
    for r in missed.itertuples():
        part = r.claim.split(" > ")[1]
        ivg, other = ((world_scores or {}).get((r.model, m)) for m in ("ivg", part))
        if ivg is not None and other is not None:
            reading = ("IVG's texts the better ones, rated lower by the gold reward model" if ivg > other
                       else "IVG's texts not the better ones by this score either")
            compared.append(f"{ivg:.2f} against {other:.2f} for {part} on {r.model} ({reading})")
    if compared:
        lines.append("The world's own score of the outputs (what the gold reward model was trained to predict): ivg "
                     + "; ".join(compared) + ".")
    return " ".join(lines)


def claims_markdown(claims: pd.DataFrame, unit: str) -> str:
    digits = 2 if unit == "reward" else 3
    lines = ["| model | claim | difference (mean ± s.e.) | verdict |", "|---|---|---|---|"]
    lines += [f"| {r.model} | {r.claim} | " + (f"{r.difference:+.{digits}f} ± {r.se:.{digits}f}" if r.n else "–")
              + f" | {r.verdict} |" for r in claims.itertuples()]
    return "\n".join(lines)
