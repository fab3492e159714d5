"""A method's KL from the frozen guided model as the tables and the claims show it (docs/ALGORITHMS.md §5.4)."""

from __future__ import annotations

import math


KL_LEGEND = ("KL: nats from the frozen guided model, the exact per-token KL summed along each response (mean ± "
             "s.e.); \"≤ x (bound)\": best-of-N's analytic upper bound log N − (N−1)/N; \"n/d\": not defined for "
             "chunk-level search, whose output a scorer picks among rows; \"∞\": the method draws tokens the frozen "
             "model's sampling never does; \"—\": generations written before the KL was measured "
             "(docs/ALGORITHMS.md §5.4).")


def kl_cell(row) -> str:
    """A method's KL from the frozen model as ``KL_LEGEND`` says (metrics without KL columns: "—")."""
    kind, mean = getattr(row, "kl_kind", None), getattr(row, "kl_mean", float("nan"))
    if kind == "undefined":
        return "n/d"
    if kind not in ("exact", "upper_bound") or math.isnan(mean):
        return "—"
    if kind == "upper_bound":
        return f"≤ {mean:.2f} (bound)"
    return "∞" if math.isinf(mean) else f"{mean:.2f} ± {_two_digits(row.kl_se)}"


def _two_digits(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.2f}"
