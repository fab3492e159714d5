"""Report: paper-shaped tables whose numbers are the inputs', the paper's beside them, figures."""

import pandas as pd
import pytest

from valueguide.evaluate import write_csv
from valueguide.report.paper import leaderboard_reference, ordered
from valueguide.report.tables import run_report

COST = {"tokens_mean": 20.0, "passes": 40.0, "passes_guided": 40.0, "tokens_encoded": 400.0, "wall_time": 2.0}


def _reward_metrics() -> pd.DataFrame:
    rows = []
    for i, (model, method) in enumerate([("gpt2-large", "ivg"), ("gpt2-large", "base"), ("gpt2-large", "mine"),
                                         ("gpt2-large", "cbs_explicit"), ("gpt2-xl", "base"), ("gpt2-xl", "ivg")]):
        rows.append({"model": model, "method": method, "n": 4, "reward_mean": 0.123456 * i - 0.4,
                     "reward_se": 0.01 + 0.001 * i, **COST, "passes_value": 8.0 * i, "passes": 40.0 + 8.0 * i})
    return pd.DataFrame(rows)


def _alpaca_metrics() -> pd.DataFrame:
    return pd.DataFrame([
        {"model": "mistral", "method": method, "judge": "valueguide_local_reward", "n": 4,
         "length_controlled_winrate": lc, "lc_standard_error": 0.0, "win_rate": wr, "standard_error": 3.5,
         **COST} for method, lc, wr in (("base", 31.25, 40.5), ("ivg", 55.0, 61.75))])


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
    write_csv(alpaca, tmp_path / "alpaca.csv")
    out = tmp_path / "report"
    main = run_report(tmp_path / "reward.csv", tmp_path / "alpaca.csv", out, task="summarization")

    reward_md = main.split("## AlpacaEval")[0]
    assert _header(reward_md) == ["method", "gpt2-large", "gpt2-large (paper)", "gpt2-xl"]
    methods = [line.split("|")[1].strip() for line in reward_md.splitlines() if line.startswith("| ")][1:]
    assert methods == ["base", "cbs_explicit", "ivg", "mine"]  # the paper's order, then others
    for r in reward.itertuples():
        cells = _row(reward_md, r.method)
        column = _header(reward_md).index(r.model)
        assert cells[column] == f"{r.reward_mean:.2f} ± {r.reward_se:.2f}"
    assert _row(reward_md, "base")[2] == "-1.84" and _row(reward_md, "cbs_explicit")[2] == "1.42"
    assert _row(reward_md, "ivg")[2] == ""

    alpaca_md = main.split("## AlpacaEval")[1]
    assert _header(alpaca_md) == ["method", "mistral", "mistral (paper LC)"]
    assert _row(alpaca_md, "base")[1:] == ["31.2 / 40.5", "19.51"] and _row(alpaca_md, "ivg")[1:] == ["55.0 / 61.8", "26.51"]
    assert "comparable only to each other" in alpaca_md
    assert _row(alpaca_md, "Mistral-7B-Instruct-v0.2")[1:3] == ["17.11", "14.72"]

    numbers = pd.read_csv(out / "tables.csv")
    got = numbers[numbers.kind == "reward"].set_index(["model", "method"])
    for r in reward.itertuples():
        assert got.loc[(r.model, r.method), "value"] == r.reward_mean
        assert got.loc[(r.model, r.method), "se"] == r.reward_se
        assert got.loc[(r.model, r.method), "passes_per_prompt"] == r.passes / r.n
    got = numbers[numbers.kind == "alpaca"].set_index("method")
    assert got.loc["ivg", ["value", "win_rate", "win_rate_se", "paper"]].tolist() == [55.0, 61.75, 3.5, 26.51]

    document = (out / "tables.md").read_text()
    assert main in document and "## Cost per prompt" in document
    assert "| gpt2-large | mine | 4 | 20.0 | 14.0 (guided 10.0, value 4.0) | 100 | 0.500 |" in document
    for name in ("reward_by_method", "reward_vs_cost", "alpaca_by_method", "alpaca_vs_cost"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_any_metrics_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        run_report(None, None, tmp_path)


def test_leaderboard_numbers_come_from_alpaca_eval_package():
    board = leaderboard_reference().set_index("generator").round(2)
    assert board.loc["Mistral-7B-Instruct-v0.2", ["length_controlled_winrate", "win_rate"]].tolist() == [17.11, 14.72]
    assert board.loc["Mixtral-8x7B-Instruct-v0.1", ["length_controlled_winrate", "win_rate"]].tolist() == [23.69, 18.26]


def test_methods_follow_the_paper_order():
    assert ordered(["x", "ivg", "base", "vas", "x", "eft", "bon"]) == ["base", "bon", "eft", "vas", "ivg", "x"]
