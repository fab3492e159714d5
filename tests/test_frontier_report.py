"""The claims against fine-tuning and best-of-N, and the frontier plots, on synthetic scores whose verdicts
are known: every method's reward per prompt is a level, a noise shared by all methods (which the pairing
removes) and a small alternating part of its own (which makes the paired standard error)."""

import numpy as np
import pandas as pd
import pytest

from valueguide.evaluate import write_csv
from valueguide.report.claims import paired_claims
from valueguide.report.finetuning import finetuning_claims
from valueguide.report.frontier_plots import plot_frontiers
from valueguide.report.tables import claims_section, run_report

N = 20
SHARED = np.sin(np.arange(N)) * 2.0
ALTERNATING = (-1.0) ** np.arange(N)


def _sweep(key: str, kind: str, setting: str, points: dict) -> dict:
    """A sweep as the report slice gives it: value -> the method that runs it."""
    return {"key": key, "kind": kind, "setting": setting,
            "points": [{"value": v, "method": m} for v, m in points.items()]}


VAS = _sweep("vas", "method", "token.beta", {1: "vas", 2: "vas-beta2", 4: "vas-beta4"})
BON = _sweep("bon", "method", "chunk.K", {1: "bon-K1", 16: "bon", 128: "bon-K128"})
DPO = _sweep("dpo", "finetune", "beta", {0.1: "dpo", 0.5: "dpo-beta0.5"})

# method: (reward level, own part's size, KL, KL kind, forward passes per prompt, seconds per prompt)
METHODS = {
    "base": (0.0, 0.0, 0.0, "exact", 1.5, 0.01),
    "vas": (1.0, 1.0, 0.5, "exact", 3.0, 0.04),
    "vas-beta2": (1.4, 2.0, 1.0, "exact", 3.0, 0.04),
    "vas-beta4": (2.5, 3.0, 2.0, "exact", 3.0, 0.04),
    "dpo": (1.2, 0.0, 1.2, "exact", 1.5, 0.01),
    "dpo-beta0.5": (0.9, 0.5, 0.3, "exact", 1.5, 0.01),
    "rl": (3.0, 0.5, 3.0, "exact", 1.5, 0.01),
    "ivg": (0.5, 1.0, float("nan"), "undefined", 4.9, 0.4),
    "bon-K1": (0.0, 0.5, 0.0, "upper_bound", 1.5, 0.02),
    "bon": (1.5, 0.5, 1.83, "upper_bound", 1.6, 0.3),
    "bon-K128": (1.03, 0.0, 3.86, "upper_bound", 2.0, 3.0),
}


def _values(methods=METHODS, models=("gpt2-large",)) -> pd.DataFrame:
    return pd.DataFrame([{"model": model, "method": m, "prompt_id": i,
                          "value": level + SHARED[i] + 0.1 * own * ALTERNATING[i]}
                         for model in models for m, (level, own, *_) in methods.items() for i in range(N)])


def _metrics(values: pd.DataFrame, methods=METHODS, kl=True) -> pd.DataFrame:
    rows = []
    for (model, method), sub in values.groupby(["model", "method"], sort=False):
        _, _, kl_mean, kind, passes, seconds = methods[method]
        v = sub["value"].to_numpy()
        row = {"model": model, "method": method, "n": N, "reward_mean": v.mean(),
               "reward_se": v.std(ddof=1) / np.sqrt(N), "tokens_mean": 20.0, "passes": passes * N,
               "tokens_encoded": 100.0 * N, "wall_time": seconds * N}
        if kl:
            row |= {"kl_mean": kl_mean, "kl_se": 0.05 if kind == "exact" else float("nan"), "kl_kind": kind}
        rows.append(row)
    return pd.DataFrame(rows)


def _brute(values: pd.DataFrame, a: str, b: str) -> tuple[float, float]:
    """Mean and standard error of a − b over the prompts, computed directly."""
    diff = [values[(values.method == a) & (values.prompt_id == i)].value.item()
            - values[(values.method == b) & (values.prompt_id == i)].value.item() for i in range(N)]
    return float(np.mean(diff)), float(np.std(diff, ddof=1) / np.sqrt(N))


def _claim(claims: pd.DataFrame, name: str):
    (row,) = claims[claims["claim"] == name].itertuples()
    return row


def test_the_default_claims_against_fine_tuning_are_paired_and_left_out_without_their_methods():
    values = _values({m: METHODS[m] for m in ("base", "vas", "ivg", "dpo")})
    claims = paired_claims(values)
    assert [c for c in claims["claim"] if "dpo" in c or "rl" in c] == ["dpo > base", "vas > dpo", "ivg > dpo"]
    for name, (a, b), verdict in (("vas > dpo", ("vas", "dpo"), "fails"), ("ivg > dpo", ("ivg", "dpo"), "fails")):
        row = _claim(claims, name)
        assert (row.difference, row.se) == pytest.approx(_brute(values, a, b)) and row.verdict == verdict
    more = _values({m: METHODS[m] for m in ("base", "vas-beta4", "rl")})
    assert "vas > rl" not in set(paired_claims(more)["claim"])  # no vas: omitted, not failed


def test_a_sweeps_added_points_make_no_claim_of_their_own_against_base():
    added = {"vas-beta2", "vas-beta4", "bon-K1", "bon-K128", "dpo-beta0.5"}
    claims = set(paired_claims(_values(), sweep_points=added)["claim"])
    assert {"vas > base", "dpo > base", "bon > base", "vas > rl", "ivg > rl"} <= claims
    assert not {"vas-beta2 > base", "bon-K128 > base", "dpo-beta0.5 > base"} & claims


def test_on_the_frontier_the_best_vas_point_at_equal_or_lower_kl_meets_each_fine_tuned_point():
    values = _values()
    claims = finetuning_claims(values, _metrics(values), [VAS, BON, DPO])
    # dpo's KL is 1.2: vas-beta4 (better, at KL 2.0) is too far; vas-beta2 is the best within reach
    dpo = _claim(claims, "best vas at KL ≤ dpo's > dpo")
    assert (dpo.difference, dpo.se) == pytest.approx(_brute(values, "vas-beta2", "dpo")) and dpo.verdict == "holds"
    assert dpo.detail.startswith("vas-beta2 (KL 1.00, gold reward ") and "against dpo (KL 1.20" in dpo.detail
    rl = _claim(claims, "best vas at KL ≤ rl's > rl")
    assert (rl.difference, rl.se) == pytest.approx(_brute(values, "vas-beta4", "rl")) and rl.verdict == "fails"
    none = _claim(claims, "best vas at KL ≤ dpo-beta0.5's > dpo-beta0.5")
    assert none.n == 0 and none.verdict == "not resolved"
    assert none.detail == ("no VAS point is as close to the frozen model as dpo-beta0.5 (KL 0.30); the closest, vas, "
                           "is at 0.50")


def test_vas_against_best_of_128_holds_within_its_interval_and_states_the_cost_ratio():
    values = _values()
    claims = finetuning_claims(values, _metrics(values), [VAS, BON])
    vas = _claim(claims, "vas within best-of-128's interval or above")
    mean, se = _brute(values, "vas", "bon-K128")
    assert (vas.difference, vas.se) == pytest.approx((mean, se))
    assert mean < 0 < mean + 1.96 * se and vas.verdict == "holds"  # below, but inside the interval
    assert ("at 1.5 of its forward passes (3.0 against 2.0 per prompt) and 0.013 of its seconds (0.040 against "
            "3.000 s per prompt)") in vas.detail  # two significant digits: a small fraction stays readable
    best = _claim(claims, "best vas within best-of-128's interval or above")  # vas-beta4, the best VAS point
    assert best.detail.startswith("vas-beta4 ") and best.verdict == "holds" and best.difference > 0


def test_vas_well_below_best_of_128_fails_with_its_rewards_and_cost():
    methods = {**METHODS, "bon-K128": (3.0, 0.0, 3.86, "upper_bound", 2.0, 2.0)}
    values = _values(methods)
    claims = finetuning_claims(values, _metrics(values, methods), [VAS, BON])
    for name, method in (("vas within best-of-128's interval or above", "vas"),
                         ("best vas within best-of-128's interval or above", "vas-beta4")):
        row = _claim(claims, name)
        mean, se = _brute(values, method, "bon-K128")
        assert row.verdict == "fails" and mean + 1.96 * se < 0
        bon = values[values.method == "bon-K128"].value
        assert f"against best-of-128 (bon-K128) {bon.mean():.2f} ± {bon.std() / np.sqrt(N):.2f}," in row.detail


def test_without_kl_columns_the_frontier_claims_are_left_out_and_best_of_n_stays():
    values = _values()
    claims = finetuning_claims(values, _metrics(values, kl=False), [VAS, BON, DPO])
    assert set(claims["claim"]) == {"vas within best-of-128's interval or above",
                                    "best vas within best-of-128's interval or above"}
    assert finetuning_claims(values, _metrics(values), []).empty  # no sweeps: none of these claims


def test_a_failed_default_claim_says_how_far_the_tuned_model_moved(tmp_path):
    values = _values()
    values.rename(columns={"value": "reward"}).to_parquet(tmp_path / "scores.parquet")
    text, claims = claims_section(tmp_path / "scores.parquet", None, None, reward=_metrics(values), sweeps=[VAS, BON])
    rl = _claim(claims, "vas > rl")
    assert rl.verdict == "fails" and rl.detail.endswith("rl moved 2.50 nats farther from the frozen model "
                                                         "(the frontier compares at equal KL)")
    assert "KL from the frozen model ivg n/d, rl 3.00 ± 0.05" in _claim(claims, "ivg > rl").detail
    assert f"- gpt2-large, vas > rl (fails): {rl.detail}." in text


@pytest.mark.parametrize("kl", [True, False])
def test_the_frontier_plots_are_written_per_guided_model(tmp_path, kl):
    values = _values(models=("gpt2-large", "gpt2-xl"))
    written = plot_frontiers(_metrics(values, kl=kl), [VAS, BON, DPO], tmp_path)
    assert sorted(p.name for p in written) == ["frontier_cost_gpt2-large.png", "frontier_cost_gpt2-xl.png",
                                               "frontier_kl_gpt2-large.png", "frontier_kl_gpt2-xl.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_the_report_draws_the_frontiers_and_prints_the_claims_with_their_measures(tmp_path):
    values = _values()
    write_csv(_metrics(values), tmp_path / "reward.csv")
    values.rename(columns={"value": "reward"}).to_parquet(tmp_path / "scores.parquet")
    main = run_report(tmp_path / "reward.csv", None, tmp_path / "out", task="sentiment",
                      reward_scores_path=tmp_path / "scores.parquet", sweeps=[VAS, BON, DPO])
    assert (tmp_path / "out" / "frontier_kl_gpt2-large.png").exists()
    assert (tmp_path / "out" / "frontier_cost_gpt2-large.png").exists()
    assert "| gpt2-large | vas within best-of-128's interval or above | " in main
    assert "| gpt2-large | best vas at KL ≤ dpo-beta0.5's > dpo-beta0.5 | – | not resolved |" in main
    saved = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert "0.013 of its seconds" in _claim(saved, "vas within best-of-128's interval or above").detail
    run_report(tmp_path / "reward.csv", None, tmp_path / "plain", reward_scores_path=tmp_path / "scores.parquet")
    assert not list((tmp_path / "plain").glob("frontier_*"))  # no sweeps, no frontier plots
