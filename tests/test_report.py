"""Report: paper-shaped tables whose numbers are the inputs', the paper's beside them, figures."""

import json

import numpy as np
import pandas as pd
import pytest

from valueguide.artifacts import ArtifactError
from valueguide.decoding.method_spec import Method
from valueguide.evaluate import write_csv
from valueguide.report.paper import leaderboard_reference, ordered
from valueguide.report.tables import run_report

# method -> its KL from the frozen model as the evaluate stage writes it (docs/ALGORITHMS.md §5.4)
KL = {"base": ("exact", 0.0, 0.0), "mine": ("exact", 0.4213, 0.0312), "cbs_explicit": ("upper_bound", 2.0794, np.nan),
      "ivg": ("undefined", np.nan, np.nan)}
COST = {"tokens_mean": 20.0, "passes": 40.0, "passes_guided": 40.0, "tokens_encoded": 400.0, "wall_time": 2.0}


def _reward_metrics() -> pd.DataFrame:
    rows = []
    for i, (model, method) in enumerate([("gpt2-large", "ivg"), ("gpt2-large", "base"), ("gpt2-large", "mine"),
                                         ("gpt2-large", "cbs_explicit"), ("gpt2-xl", "base"), ("gpt2-xl", "ivg")]):
        rows.append({"model": model, "method": method, "n": 4, "reward_mean": 0.123456 * i - 0.4,
                     "reward_se": 0.01 + 0.001 * i, **dict(zip(("kl_kind", "kl_mean", "kl_se"), KL[method])), **COST, "passes_value": 8.0 * i, "passes": 40.0 + 8.0 * i})
    return pd.DataFrame(rows)


def _alpaca_metrics(judge="weighted_alpaca_eval_gpt4_turbo", difficulty="given") -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "mistral", "method": method, "judge": judge, "glm": "length_controlled_v1", "difficulty": difficulty,
         "n": 4, "length_controlled_winrate": lc, "lc_standard_error": 0.0, "lc_bootstrap_se": 2.25, "lc_low": lc - 4.0,
         "lc_high": lc + 5.0,
         "win_rate": wr, "standard_error": 3.5, **COST} for method, lc, wr in (("base", 31.25, 40.5), ("ivg", 55.0, 61.75))])


def _write_alpaca(tmp_path, metrics: pd.DataFrame) -> None:
    """metrics.csv and, beside it, each method's annotations (preference 1..2 per instruction)."""
    from valueguide.artifacts import write_json

    write_csv(metrics, tmp_path / "alpaca.csv")
    for i, r in enumerate(metrics.itertuples()):
        write_json([{"preference": 1.0 + 0.1 * i + 0.01 * k} for k in range(4)],
                   tmp_path / r.model / r.method / "annotations.json")


def _row(table_md: str, first_cell: str) -> list[str]:
    for line in table_md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


def _header(table_md: str) -> list[str]:
    return _row(table_md, "method")


def test_report_renders_the_inputs_numbers_in_paper_order_beside_the_papers(tmp_path):
    reward, alpaca = _reward_metrics(), _alpaca_metrics()
    write_csv(reward, tmp_path / "reward.csv")
    _write_alpaca(tmp_path, alpaca)
    out = tmp_path / "report"
    main = run_report(tmp_path / "reward.csv", tmp_path / "alpaca.csv", out, task="summarization")

    reward_md = main.split("## AlpacaEval")[0]
    assert _header(reward_md) == ["method", "gpt2-large", "gpt2-large (paper)", "gpt2-large KL", "gpt2-xl", "gpt2-xl KL"]
    methods = [line.split("|")[1].strip() for line in reward_md.splitlines() if line.startswith("| ")][1:]
    assert methods == ["base", "cbs_explicit", "ivg", "mine"]  # the paper's order, then others
    for r in reward.itertuples():
        cells = _row(reward_md, r.method)
        column = _header(reward_md).index(r.model)
        assert cells[column] == f"{r.reward_mean:.2f} ± {r.reward_se:.2f}"
    assert _row(reward_md, "base")[2] == "-1.84" and _row(reward_md, "cbs_explicit")[2] == "1.42"
    assert _row(reward_md, "ivg")[2] == ""
    kl = {method: _row(reward_md, method)[3] for method in KL}
    assert kl == {"base": "0.00 ± 0.00", "mine": "0.42 ± 0.03", "cbs_explicit": "≤ 2.08 (bound)", "ivg": "n/d"}
    assert _row(reward_md, "ivg")[5] == "n/d" and "\"n/d\": not defined for chunk-level search" in reward_md

    alpaca_md = main.split("## AlpacaEval")[1]
    assert _header(alpaca_md) == ["method", "mistral", "mistral (paper LC)", "mistral KL"]
    # metrics written before the KL was measured: a dash
    assert _row(alpaca_md, "base")[1:] == ["31.2 ± 2.2 [27.2, 36.2] / 40.5 ± 3.5", "19.51", "—"]
    assert _row(alpaca_md, "ivg")[1:] == ["55.0 ± 2.2 [51.0, 60.0] / 61.8 ± 3.5", "26.51", "—"]
    assert _row(alpaca_md, "Mistral-7B-Instruct-v0.2")[1:3] == ["17.11", "14.72"]

    numbers = pd.read_csv(out / "tables.csv")
    got = numbers[numbers.kind == "reward"].set_index(["model", "method"])
    for r in reward.itertuples():
        assert got.loc[(r.model, r.method), "value"] == r.reward_mean
        assert got.loc[(r.model, r.method), "se"] == r.reward_se
        assert got.loc[(r.model, r.method), "passes_per_prompt"] == r.passes / r.n
        assert got.loc[(r.model, r.method), "kl_kind"] == r.kl_kind
        assert got.loc[(r.model, r.method), ["kl_mean", "kl_se"]].tolist() == pytest.approx([r.kl_mean, r.kl_se],
                                                                                             nan_ok=True)
    got = numbers[numbers.kind == "alpaca"].set_index("method")
    assert got.loc["ivg", ["value", "win_rate", "win_rate_se", "paper"]].tolist() == [55.0, 61.75, 3.5, 26.51]

    document = (out / "tables.md").read_text()
    assert main in document and "## Cost per prompt" in document
    assert "| gpt2-large | mine | 4 | 20.0 | 14.0 (guided 10.0, value 4.0) | 100 | 0.500 | 0.42 ± 0.03 |" in document
    claims = pd.read_csv(out / "claims.csv")  # AlpacaEval's: the judge's preference, ivg minus base per instruction
    assert claims[["claim", "difference", "verdict"]].values.tolist() == [["ivg > base", pytest.approx(0.1), "holds"]]
    assert "## Paper claims" in main
    for name in ("reward_by_method", "reward_vs_cost", "alpaca_by_method", "alpaca_vs_cost"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("judge,difficulty", [("valueguide_local_reward", "given"),
                                              ("weighted_alpaca_eval_gpt4_turbo", "fitted")])
def test_an_lc_that_is_not_alpaca_evals_stands_beside_neither_the_paper_nor_the_leaderboard(tmp_path, judge,
                                                                                             difficulty):
    _write_alpaca(tmp_path, _alpaca_metrics(judge, difficulty))
    main = run_report(None, tmp_path / "alpaca.csv", tmp_path / "report")
    assert _header(main) == ["method", "mistral", "mistral KL"]
    assert "Mistral-7B-Instruct-v0.2" not in main and "19.51" not in main
    assert "compare the methods of this run with each other only" in main


def test_the_report_repeats_the_note_of_an_lc_that_is_alpaca_evals_baseline(tmp_path):
    alpaca = _alpaca_metrics().assign(lc_note=["every output is its instruction's reference", ""])
    _write_alpaca(tmp_path, alpaca)
    main = run_report(None, tmp_path / "alpaca.csv", tmp_path / "report")
    assert "mistral/base: every output is its instruction's reference." in main and "mistral/ivg:" not in main


def test_report_without_any_metrics_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        run_report(None, None, tmp_path)


def test_each_reports_heading_names_the_config_that_made_it(tmp_path):
    """The two settings' reports differ in their first line: the config files of each."""
    from valueguide.artifacts import write_parquet
    from valueguide.report.summary import run_summary

    write_csv(_reward_metrics(), tmp_path / "reward.csv")
    samples = pd.DataFrame({"prompt_id": [0, 0], "prompt": ["a", "a"], "response": ["b", "c"], "reward": [0.5, -0.5],
                            "response_ids": [[1], [2, 3]], "finished": [True, False]})
    write_parquet(samples, tmp_path / "samples.parquet")
    name = "config.yaml + config/tiny_instruction.yaml"
    run_report(tmp_path / "reward.csv", None, tmp_path / "report", config_name=name)
    run_summary(tmp_path / "samples.parquet", None, tmp_path / "report" / "summary.md", config_name=name)
    assert (tmp_path / "report" / "tables.md").read_text().splitlines()[0] == f"# Results: {name}"
    assert (tmp_path / "report" / "summary.md").read_text().splitlines()[0] == f"# valueguide summary: {name}"


def test_leaderboard_numbers_come_from_alpaca_eval_package():
    board = leaderboard_reference().set_index("generator").round(2)
    assert board.loc["Mistral-7B-Instruct-v0.2", ["length_controlled_winrate", "win_rate"]].tolist() == [17.11, 14.72]
    assert board.loc["Mixtral-8x7B-Instruct-v0.1", ["length_controlled_winrate", "win_rate"]].tolist() == [23.69, 18.26]


def test_methods_follow_the_paper_order():
    assert ordered(["x", "ivg", "base", "vas", "x", "eft", "bon"]) == ["base", "bon", "eft", "vas", "ivg", "x"]


def test_paper_claims_are_paired_differences_with_verdicts():
    from valueguide.report.claims import paired_claims

    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 50)
    rows = []
    for method, values in {"base": base, "eft": base + 1.0 + rng.normal(0, 0.1, 50),
                           "cbs_explicit": base + 2.0 + rng.normal(0, 0.1, 50),
                           "ivg": base + 2.0 + rng.normal(0, 0.1, 50)}.items():
        rows += [{"model": "m", "method": method, "prompt_id": i, "value": v} for i, v in enumerate(values)]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter
    claims = paired_claims(frame).set_index("claim")
    assert list(claims.index) == ["eft > base", "cbs_explicit > base", "ivg > base", "ivg > eft", "ivg > cbs_explicit"]
    wide = frame.pivot(index="prompt_id", columns="method", values="value")
    diff = wide["ivg"] - wide["eft"]
    assert claims.loc["ivg > eft", "difference"] == pytest.approx(diff.mean())
    assert claims.loc["ivg > eft", "se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(50))
    assert claims.loc["ivg > base", "verdict"] == "holds" and claims.loc["ivg > eft", "verdict"] == "holds"
    assert claims.loc["ivg > cbs_explicit", "verdict"] == "not resolved"
    flipped = frame.assign(value=np.where(frame.method == "eft", frame.value - 5.0, frame.value))
    assert paired_claims(flipped).set_index("claim").loc["eft > base", "verdict"] == "fails"


def test_headroom_is_the_best_methods_share_of_the_way_to_the_best_base_policy_sample(tmp_path):
    from valueguide.artifacts import write_parquet

    reward = _reward_metrics()  # gpt2-large: base -0.276544, best cbs_explicit -0.029632; gpt2-xl: base 0.093824
    write_csv(reward, tmp_path / "reward.csv")
    write_parquet(pd.DataFrame({"reward": [-3.0, 0.75, 2.5, 1.0]}), tmp_path / "samples.parquet")
    main = run_report(tmp_path / "reward.csv", None, tmp_path / "report", samples_path=tmp_path / "samples.parquet")
    room = pd.read_csv(tmp_path / "report" / "headroom.csv").set_index("model")
    large = reward[reward.model == "gpt2-large"].set_index("method").reward_mean
    best = large.drop("base").max()
    assert room.loc["gpt2-large", "best_method"] == large.drop("base").idxmax() and room.loc["gpt2-large", "ceiling"] == 2.5
    assert room.loc["gpt2-large", "share"] == pytest.approx((best - large["base"]) / (2.5 - large["base"]))
    xl = reward[reward.model == "gpt2-xl"].set_index("method").reward_mean
    assert room.loc["gpt2-xl", "share"] == pytest.approx((xl["ivg"] - xl["base"]) / (2.5 - xl["base"]))
    assert "ceiling (best of 4 base-policy samples)" in main and "| headroom |" in main
    saturated = reward.assign(reward_mean=np.where((reward.model == "gpt2-xl") & (reward.method == "ivg"), 2.4,
                                                   reward.reward_mean))
    write_csv(saturated, tmp_path / "reward.csv")
    main = run_report(tmp_path / "reward.csv", None, tmp_path / "report", samples_path=tmp_path / "samples.parquet")
    assert _row(main, "gpt2-xl")[-1] == "saturated" and _row(main, "gpt2-large")[-1] == "headroom"


def test_seed_ranges_show_each_cells_range_and_how_often_each_verdict_came_out(tmp_path):
    from valueguide.report.seeds import seed_report

    runs = []
    for i, (base, ivg, verdict) in enumerate([(0.5, 5.0, "holds"), (-0.25, 5.5, "holds"), (0.0, 4.0, "fails")]):
        run = tmp_path / f"seed{i}"
        (run / "scores").mkdir(parents=True)
        (run / "report").mkdir()
        pd.DataFrame({"model": ["m", "m"], "method": ["ivg", "base"], "reward_mean": [ivg, base],
                      "world_score_mean": [2 * ivg, 0.0]}).to_csv(run / "scores" / "reward_metrics.csv", index=False)
        pd.DataFrame({"model": ["m"], "claim": ["ivg > base"], "difference": [ivg - base],
                      "verdict": [verdict]}).to_csv(run / "report" / "claims.csv", index=False)
        pd.DataFrame({"model": ["m"], "best_method": ["ivg"], "share": [0.25 + 0.125 * i],
                      "ceiling": [8.0]}).to_csv(run / "report" / "headroom.csv", index=False)
        (run / "implicit").mkdir()
        (run / "value_metrics.json").write_text(json.dumps({"pairwise_accuracy": 0.7 + 0.05 * i, "value_r2": 0.5}))
        (run / "implicit" / "metrics.json").write_text(json.dumps({"heldout_accuracy": 0.6 + 0.1 * i}))
        runs.append(run)
    text = seed_report(runs)
    assert "| explicit value: pairwise accuracy | 0.70 – 0.80 |" in text
    assert "| explicit value: R² against Monte-Carlo values | 0.50 |" in text
    assert "| implicit value: held-out pairwise accuracy | 0.60 – 0.80 |" in text
    assert "| base | -0.25 – 0.50 / 0.00 |" in text and "| ivg | 4.00 – 5.50 / 8.00 – 11.00 |" in text
    assert "gold reward / the world's own score, range over 3 runs" in text
    assert "| m | 25.00 – 50.00 % | ivg | 8.00 |" in text
    assert text.index("| base |") < text.index("| ivg |")  # the paper's order
    assert "| ivg > base | holds 2/3, fails 1/3 (4.00 – 5.75) |" in text
    (runs[2] / "report" / "claims.csv").unlink()
    with pytest.raises(ArtifactError, match="claims.csv is missing"):
        seed_report(runs)


def test_seed_ranges_of_alpaca_runs_give_the_lc_bootstrap_standard_errors_span(tmp_path):
    from valueguide.report.seeds import seed_report

    runs = []
    for i, se in enumerate([2.5, 2.75]):
        run = tmp_path / f"seed{i}"
        (run / "alpaca_eval").mkdir(parents=True)
        (run / "report").mkdir()
        pd.DataFrame({"model": ["m", "m"], "method": ["base", "ivg"], "length_controlled_winrate": [50.0, 60.0 + i],
                      "win_rate": [51.0, 62.0], "lc_bootstrap_se": [se, se - 0.5]}).to_csv(
            run / "alpaca_eval" / "metrics.csv", index=False)
        pd.DataFrame({"model": ["m"], "claim": ["ivg > base"], "difference": [0.1],
                      "verdict": ["holds"]}).to_csv(run / "report" / "claims.csv", index=False)
        runs.append(run)
    text = seed_report(runs)
    assert "| ivg | 60.00 – 61.00 / 62.00 |" in text
    assert "LC bootstrap standard error, over every cell of the 2 runs: 2.00 – 2.75 points" in text
    assert "Headroom" not in text


def test_a_missed_ivg_claim_is_reported_beside_each_parts_accuracy_and_the_worlds_own_score():
    from valueguide.report.claims import ivg_parts_note

    claims = pd.DataFrame({"model": ["m", "m", "n"], "claim": ["ivg > base", "ivg > cbs_explicit", "ivg > eft"],
                           "verdict": ["not resolved", "fails", "holds"]})
    note = ivg_parts_note(claims, 0.875, 0.625)
    assert "ivg > cbs_explicit on m (fails)" in note and "ivg > base" not in note and "on n" not in note
    assert "87.5% right (explicit, its chunk level) and 62.5% (implicit" in note and "world's own" not in note
    scores = {("m", "ivg"): 5.5, ("m", "cbs_explicit"): 2.25, ("n", "ivg"): 1.0, ("n", "eft"): 9.0}
    assert "ivg 5.50 against 2.25 for cbs_explicit on m (IVG's texts the better ones, rated lower" in ivg_parts_note(
        claims, None, None, scores)
    worse = {("m", "ivg"): 1.5, ("m", "cbs_explicit"): 2.25}
    assert "(IVG's texts not the better ones by this score either)" in ivg_parts_note(claims, None, None, worse)
    assert ivg_parts_note(claims.assign(verdict="holds"), 0.875, 0.625, scores) == ""


def test_the_worlds_own_score_stands_beside_the_gold_reward_when_the_metrics_carry_it(tmp_path):
    reward = _reward_metrics()
    write_csv(reward, tmp_path / "plain.csv")
    assert "world's own score" not in run_report(tmp_path / "plain.csv", None, tmp_path / "a")
    write_csv(reward.assign(world_score_mean=reward.reward_mean * 2 + 1.0, world_score_se=0.125), tmp_path / "w.csv")
    main = run_report(tmp_path / "w.csv", None, tmp_path / "b")
    table = main.split("## Gold reward / the world's own score")[1]
    ivg = reward[(reward.model == "gpt2-xl") & (reward.method == "ivg")].iloc[0]
    assert _row(table, "ivg")[2] == f"{ivg.reward_mean:.2f} ± {ivg.reward_se:.2f} / {ivg.reward_mean * 2 + 1:.2f} ± 0.12"


def _generation_rows(method: str, reward: float, passes: dict, tokens: dict, candidates: dict) -> pd.DataFrame:
    """Two prompts' generations as stage generate writes them (each row its share of its batch), scored."""
    import json

    return pd.DataFrame({"model": "mistral", "method": method, "prompt_id": [0, 1], "prompt": ["p", "q"],
                         "output": ["a", "b"], "n_tokens": [8, 10], "reward": [reward, reward + 1.0],
                         "forward_passes": json.dumps(passes), "tokens_encoded": json.dumps(tokens),
                         "candidate_tokens": json.dumps(candidates), "wall_time": 0.25, "kl": [0.0, 0.0]})


def test_cost_per_prompt_is_the_tokens_each_model_processed_and_quality_is_plotted_against_it(tmp_path, monkeypatch):
    from valueguide.evaluate.reward_task import summarize_rewards
    from valueguide.report import plots

    metrics = summarize_rewards([
        _generation_rows("base", 0.0, {"guided": 1.5}, {"guided": 30.0}, {}),
        # best-of-4 in one batched pass a step: few passes, four times the tokens, and the reward model's
        _generation_rows("bon", 1.0, {"guided": 1.6, "reward": 0.1}, {"guided": 120.0, "reward": 100.0}, {}),
        # token-level guidance: the pair reads the rows and scores 20 candidates a step
        _generation_rows("eft", 2.0, {"guided": 1.5, "tuned": 1.5, "untuned": 1.5},
                         {"guided": 30.0, "tuned": 12.0, "untuned": 12.0}, {"tuned": 40.0, "untuned": 40.0}),
    ], {"base": Method(), "bon": Method.from_config({"chunk": {"scorer": "gold", "W": 1, "K": 4}}),
        "eft": Method.from_config({"token": {"kind": "implicit"}})})
    write_csv(metrics, tmp_path / "reward.csv")
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.__setitem__(path.name, fig))
    run_report(tmp_path / "reward.csv", None, tmp_path / "report")

    costs = (tmp_path / "report" / "tables.md").read_text().split("## Cost per prompt")[1]
    assert _row(costs, "model")[5] == "tokens processed (by role)"
    by_method = {cells[1]: cells for cells in (_row(line, "mistral") for line in costs.splitlines() if "mistral" in line)}
    assert by_method["base"][5] == "30 (guided 30)"
    assert by_method["bon"][4:6] == ["1.7 (guided 1.6, reward 0.1)", "220 (guided 120, reward 100)"]
    assert by_method["eft"][5] == "134 (guided 30, tuned 52, untuned 52)"
    assert [by_method[m][7] for m in ("base", "bon", "eft")] == ["0.00 ± 0.00", "≤ 0.64 (bound)", "0.00 ± 0.00"]
    numbers = pd.read_csv(tmp_path / "report" / "tables.csv").set_index("method")
    assert numbers.loc["eft", ["tokens_encoded_per_prompt", "tokens_encoded_tuned_per_prompt",
                               "tokens_encoded_reward_per_prompt"]].tolist() == [134.0, 52.0, 0.0]

    # The equal-compute figure: one panel for the one guided model, each method at its tokens per prompt.
    (axes,) = figures["reward_vs_tokens.png"].axes
    assert axes.get_xlabel() == "tokens processed per prompt, all models"
    points = {c.get_label(): tuple(c.lines[0].get_xydata()[0]) for c in axes.containers}  # each errorbar's point
    assert points == {"base": (30.0, 0.5), "bon": (220.0, 1.5), "eft": (134.0, 2.5)}


@pytest.mark.parametrize("explicit,pairs,implicit,flagged", [
    (0.536, 360, 0.7575, ["explicit"]),   # the instruction setting's: its interval [0.484, 0.588] holds 0.5
    (0.54, 20000, 0.7575, ["explicit"]),  # precise, but under 0.55: a rank correlation under 0.1
    (0.617, 360, 0.53, ["implicit"]),     # the TL;DR value's accuracy is clear of chance (interval from 0.567)
    (0.617, 360, 0.7575, []),
])
def test_the_summary_says_which_value_is_near_chance(tmp_path, explicit, pairs, implicit, flagged):
    from valueguide.artifacts import write_json
    from valueguide.report.summary import render_fits

    write_json({"pairwise_accuracy": explicit, "pairwise_pairs": pairs, "pairwise_accuracy_gap_gt_1": 0.7,
                "value_r2": 0.185, "train_seconds": 24.0}, tmp_path / "value.json")
    write_json({"heldout_accuracy": implicit, "n_heldout_pairs": 400, "heldout_accuracy_gap_gt_1": 0.8,
                "train_time_s": 9.0}, tmp_path / "implicit.json")
    text = render_fits(tmp_path / "value.json", tmp_path / "implicit.json")
    said = [name for name in ("explicit", "implicit") if f"The {name} value is near chance" in text]
    assert said == flagged
    if flagged == ["explicit"] and pairs == 360:
        assert "orders 53.6% of held-out pairs" in text and "95 % interval 48.4% to 58.8% over 360 pairs" in text
