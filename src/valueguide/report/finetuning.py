"""Is guidance worth it over fine-tuning? VAS's and IVG's claims, measured where the run allows them.

Beside the default claims of report/claims.py (vas > dpo, vas > rl, ivg > dpo, ivg > rl), a run with
frontier sweeps (valueguide/frontiers.py) tests two more, paired over the same prompts:

- *at equal or lower KL*: for each fine-tuned point F (dpo, rl and their sweeps' points), the VAS point
  of the highest mean gold reward among those whose KL from the frozen model is at most F's, against F.
  The point is picked on the same prompts it is tested on, which favours VAS a little; KLs are means.
- *VAS against best-of-N's largest N* (128 in config/frontiers.yaml): VAS holds when the 95 % interval of
  the paired difference reaches 0 or lies above it (within best-of-N's interval or above), and fails when
  it lies below; the verdict is on the reward alone, and VAS's cost is stated as a fraction of best-of-N's
  (forward passes and seconds per prompt).

A claim whose methods are not in the run is left out. Every claim carries a ``detail``: what was measured
beside the difference (rewards, KLs, the point picked, the cost ratio), the reason a claim failed.
"""

from __future__ import annotations

import math

import pandas as pd

from .kl import kl_cell
from .claims import AGAINST_FINETUNING, Z95, paired_difference, per_model, verdict

FINETUNED = ("dpo", "rl")  # the methods that sample a fine-tuned model plainly, at the default settings
COLUMNS = ["model", "claim", "n", "difference", "se", "verdict", "detail"]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def exact_kl(row) -> float | None:
    """The KL of a method whose KL is measured exactly, else None."""
    mean = getattr(row, "kl_mean", None)
    return float(mean) if getattr(row, "kl_kind", None) == "exact" and _finite(mean) else None


def _sweep(sweeps: list[dict], key: str, setting: str | None = None) -> dict | None:
    return next((s for s in sweeps if s["key"] == key and setting in (None, s["setting"])), None)


def _row(model: str, claim: str, pair: dict | None, detail: str, within: bool = False) -> dict:
    """A claim's row; ``within``: holds when the interval reaches 0 (the claim against best-of-N)."""
    if pair is None:
        return {"model": model, "claim": claim, "n": 0, "difference": float("nan"), "se": float("nan"),
                "verdict": "not resolved", "detail": detail}
    mean, se = pair["difference"], pair["se"]
    if within:
        upper = mean + Z95 * se if _finite(se) and se > 0 else mean
        outcome = "holds" if upper >= 0 else "fails"
    else:
        outcome = verdict(mean, se)
    return {"model": model, "claim": claim, **pair, "verdict": outcome, "detail": detail}


def _reward(row) -> str:
    return f"{row.reward_mean:.2f} ± {row.reward_se:.2f}"


def default_details(claims: pd.DataFrame, metrics: pd.DataFrame) -> pd.Series:
    """The measured detail of each default claim against fine-tuning (vas > dpo, ...): rewards and KLs,
    and where the tuned model bought its reward with distance from the frozen model, that distance."""
    rows = {(r.model, r.method): r for r in metrics.itertuples()}
    labels = {f"{a} > {b}": (a, b) for a, b in AGAINST_FINETUNING}
    details = []
    for r in claims.itertuples():
        pair = labels.get(r.claim)
        if pair is None or (r.model, pair[0]) not in rows or (r.model, pair[1]) not in rows:
            details.append("")
            continue
        guided, tuned = (rows[r.model, m] for m in pair)
        text = (f"gold reward {pair[0]} {_reward(guided)}, {pair[1]} {_reward(tuned)}; KL from the frozen model "
                f"{pair[0]} {kl_cell(guided)}, {pair[1]} {kl_cell(tuned)}")
        kl_guided, kl_tuned = exact_kl(guided), exact_kl(tuned)
        if r.verdict != "holds" and kl_guided is not None and kl_tuned is not None and kl_tuned > kl_guided:
            text += (f": {pair[1]} moved {kl_tuned - kl_guided:.2f} nats farther from the frozen model "
                     f"(the frontier compares at equal KL)")
        details.append(text)
    return pd.Series(details, index=claims.index, dtype=object)


def frontier_claims(values: pd.DataFrame, metrics: pd.DataFrame, sweeps: list[dict]) -> pd.DataFrame:
    """Per guided model and fine-tuned point F: the best VAS point at KL at most F's, against F."""
    vas = _sweep(sweeps, "vas")
    if vas is None or "kl_mean" not in metrics:
        return pd.DataFrame(columns=COLUMNS)
    tuned = list(dict.fromkeys([*FINETUNED, *(p["method"] for s in sweeps if s["kind"] == "finetune"
                                               for p in s["points"])]))
    rows = []
    for model, table in per_model(values):
        sub = metrics[metrics["model"] == model].set_index("method")
        points = {p["method"]: exact_kl(sub.loc[p["method"]]) for p in vas["points"] if p["method"] in sub.index}
        points = {m: kl for m, kl in points.items() if kl is not None}
        for f in tuned:
            if f not in sub.index or (kl_f := exact_kl(sub.loc[f])) is None or not points:
                continue
            claim = f"best vas at KL ≤ {f}'s > {f}"
            near = [m for m, kl in points.items() if kl <= kl_f]
            if not near:
                closest = min(points, key=points.get)
                rows.append(_row(model, claim, None, f"no VAS point is as close to the frozen model as {f} "
                                 f"(KL {kl_f:.2f}); the closest, {closest}, is at {points[closest]:.2f}"))
                continue
            best = max(near, key=lambda m: sub.loc[m, "reward_mean"])
            detail = (f"{best} (KL {points[best]:.2f}, gold reward {_reward(sub.loc[best])}) against "
                      f"{f} (KL {kl_f:.2f}, gold reward {_reward(sub.loc[f])})")
            rows.append(_row(model, claim, paired_difference(table, best, f), detail))
    return pd.DataFrame(rows, columns=COLUMNS)


def _per_prompt(row, column: str) -> float:
    return float(row[column]) / float(row["n"])


def best_of_n_claims(values: pd.DataFrame, metrics: pd.DataFrame, sweeps: list[dict]) -> pd.DataFrame:
    """Per guided model: vas (and the best VAS point of its sweep) within best-of-N's interval or above,
    N the bon sweep's largest, with VAS's cost as a fraction of best-of-N's."""
    bon = _sweep(sweeps, "bon", "chunk.K")
    if bon is None:
        return pd.DataFrame(columns=COLUMNS)
    largest = max(bon["points"], key=lambda p: p["value"])
    n_label, top = f"best-of-{largest['value']}", largest["method"]
    vas = _sweep(sweeps, "vas")
    rows = []
    for model, table in per_model(values):
        sub = metrics[metrics["model"] == model].set_index("method")
        if top not in sub.index:
            continue
        candidates = [("vas", "vas")]
        vas_points = [p["method"] for p in (vas or {"points": []})["points"] if p["method"] in sub.index]
        if vas_points:
            best = max(vas_points, key=lambda m: sub.loc[m, "reward_mean"])
            candidates += [(best, "best vas")] if best != "vas" else []
        for method, label in candidates:
            if method not in sub.index:
                continue
            a, b = sub.loc[method], sub.loc[top]
            passes, seconds = (_per_prompt(a, c) / _per_prompt(b, c) for c in ("passes", "wall_time"))
            detail = (f"{method} {_reward(a)} against {n_label} ({top}) {_reward(b)}, at {passes:.2g} of its forward "
                      f"passes ({_per_prompt(a, 'passes'):.1f} against {_per_prompt(b, 'passes'):.1f} per prompt) and "
                      f"{seconds:.2g} of its seconds ({_per_prompt(a, 'wall_time'):.3f} against "
                      f"{_per_prompt(b, 'wall_time'):.3f} s per prompt)")
            pair = paired_difference(table, method, top)
            rows.append(_row(model, f"{label} within {n_label}'s interval or above", pair, detail, within=True))
    return pd.DataFrame(rows, columns=COLUMNS)


def finetuning_claims(values: pd.DataFrame, metrics: pd.DataFrame, sweeps: list[dict]) -> pd.DataFrame:
    """The frontier claims and the claims against best-of-N, per guided model."""
    frames = [f for f in (frontier_claims(values, metrics, sweeps), best_of_n_claims(values, metrics, sweeps))
              if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def details_markdown(claims: pd.DataFrame) -> str:
    """One line per claim with a detail: what was measured beside its paired difference."""
    if "detail" not in claims:
        return ""
    lines = [f"- {r.model}, {r.claim} ({r.verdict}): {r.detail}."
             for r in claims.itertuples() if isinstance(r.detail, str) and r.detail]
    return "Claims against fine-tuning and best-of-N, measured:\n\n" + "\n".join(lines) if lines else ""


def sweep_points(sweeps: list[dict]) -> set[str]:
    """The methods the sweeps added (their bases, configured methods, are not among them)."""
    return {p["method"] for s in sweeps for p in s["points"]} - {s["key"] for s in sweeps}

