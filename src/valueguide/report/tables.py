"""Paper-shaped tables: methods as rows, large models as columns, the paper's numbers beside ours.

Two kinds of quality table (gold reward for the reward tasks, "LC / WR" for AlpacaEval) and one
cost table, as markdown for people and one numeric CSV (``tables.csv``) for everything else. Each
shows every method's KL from the frozen model beside it (``kl_cell``, docs/ALGORITHMS.md §5.4).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..artifacts import write_text
from ..evaluate import TOKENS_BY_ROLE, read_csv, write_csv
from .claims import claims_markdown, ivg_parts_note, paired_claims, preference_values, reward_values
from .finetuning import default_details, details_markdown, finetuning_claims, sweep_points
from .frontier_plots import plot_frontiers
from .headroom import SATURATED, headroom
from .kl import KL_LEGEND, kl_cell
from . import name_heading
from .paper import LEADERBOARD_ANNOTATOR, leaderboard_reference, ordered, paper_number
from .plots import COST_FIGURES, plot_by_method, plot_vs_cost

# kind -> (main metric, its standard error), columns of the evaluate stage's metrics tables
KINDS = {
    "reward": ("reward_mean", "reward_se"),
    "alpaca": ("length_controlled_winrate", "lc_standard_error"),
}


def _num(x: float, digits: int) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _cell(kind: str, row) -> str:
    if kind == "reward":
        return f"{_num(row.reward_mean, 2)} ± {_num(row.reward_se, 2)}"
    return (f"{_num(row.length_controlled_winrate, 1)} ± {_num(row.lc_bootstrap_se, 1)} "
            f"[{_num(row.lc_low, 1)}, {_num(row.lc_high, 1)}] / "
            f"{_num(row.win_rate, 1)} ± {_num(row.standard_error, 1)}")


def official_lc(alpaca: pd.DataFrame) -> bool:
    """Whether these LC win rates may stand beside the paper's and the leaderboard's: AlpacaEval 2.0's
    judge, its GLM, and the instruction difficulty of its own file (not one fitted here)."""
    return (set(alpaca["judge"]) == {LEADERBOARD_ANNOTATOR} and set(alpaca["glm"]) == {"length_controlled_v1"}
            and set(alpaca["difficulty"]) == {"given"})


def quality_table(kind: str, metrics: pd.DataFrame, task: str | None, names=None) -> tuple[str, list[str]]:
    """Markdown of one quality table and the sources of the paper numbers it shows."""
    metric = KINDS[kind][0]
    models = list(dict.fromkeys(metrics["model"]))
    methods = ordered(metrics["method"])
    cells = {(r.model, r.method): r for r in metrics.itertuples()}
    refs = {(m, meth): paper_number(task, m, meth, metric, names) for m in models for meth in methods}
    header, sources = ["method"], []
    for model in models:
        header.append(model)
        if any(refs[model, meth] for meth in methods):
            header.append(f"{model} (paper{' LC' if kind == 'alpaca' else ''})")
        header.append(f"{model} KL")
    rows = []
    for meth in methods:
        row = [meth]
        for model in models:
            row.append(_cell(kind, cells[model, meth]) if (model, meth) in cells else "")
            if any(refs[model, m] for m in methods):
                ref = refs[model, meth]
                row.append(f"{ref.value:.2f}" if ref else "")
                if ref and ref.source not in sources:
                    sources.append(ref.source)
            row.append(kl_cell(cells[model, meth]) if (model, meth) in cells else "")
        rows.append(row)
    return markdown(header, rows), sources


def _per_prompt(row: pd.Series, total: str, prefix: str, digits: int) -> str:
    """``total (role value, ...)`` per prompt: the column ``total`` and the columns ``prefix<role>`` a method
    used (metrics without them: the total alone)."""
    roles = ", ".join(f"{c[len(prefix):]} {row[c] / row.n:.{digits}f}" for c in row.index
                      if c.startswith(prefix) and row[c] > 0)
    return f"{_num(row[total] / row.n, digits)}" + (f" ({roles})" if roles else "")


def cost_table(metrics: pd.DataFrame) -> str:
    """Cost per prompt of every (model, method): what the quality above was bought with. Tokens processed
    (every token any model encoded, candidates included) compare methods at equal compute; forward passes
    count batched passes, which a batch of candidates costs one of."""
    rows = []
    for model in dict.fromkeys(metrics["model"]):
        sub = metrics[metrics["model"] == model]
        for method in ordered(sub["method"]):
            r = sub[sub["method"] == method].iloc[0]
            rows.append([model, method, str(int(r.n)), _num(r.tokens_mean, 1),
                         _per_prompt(r, "passes", "passes_", 1), _per_prompt(r, "tokens_encoded", TOKENS_BY_ROLE, 0),
                         _num(r.wall_time / r.n, 3), kl_cell(r)])
    return markdown(["model", "method", "prompts", "tokens generated", "forward passes (by role)",
                     "tokens processed (by role)", "wall time (s)", "KL"], rows)


def leaderboard_table() -> str:
    board = leaderboard_reference()
    rows = [[r.generator, _num(r.length_controlled_winrate, 2), _num(r.win_rate, 2), _num(r.standard_error, 2),
             str(int(r.avg_length))] for r in board.itertuples()]
    return markdown(["model", "LC win rate", "win rate", "s.e.", "avg length"], rows)


def numeric_table(kind: str, metrics: pd.DataFrame, task: str | None, names=None) -> pd.DataFrame:
    """The rows of ``tables.csv``: the inputs' numbers unchanged, costs per prompt, the paper's number."""
    metric, se = KINDS[kind]
    order = {m: i for i, m in enumerate(ordered(metrics["method"]))}
    rows = []
    for r in metrics.itertuples():
        ref = paper_number(task, r.model, r.method, metric, names)
        rows.append({
            "kind": kind, "model": r.model, "method": r.method, "metric": metric, "n": r.n,
            "value": getattr(r, metric), "se": getattr(r, se),
            "win_rate": getattr(r, "win_rate", float("nan")), "win_rate_se": getattr(r, "standard_error", float("nan")),
            "paper": ref.value if ref else float("nan"), "paper_source": ref.source if ref else "",
            "kl_kind": getattr(r, "kl_kind", ""), "kl_mean": getattr(r, "kl_mean", float("nan")),
            "kl_se": getattr(r, "kl_se", float("nan")),
            "tokens_mean": r.tokens_mean, "passes_per_prompt": r.passes / r.n,
            "tokens_encoded_per_prompt": r.tokens_encoded / r.n, "wall_time_per_prompt": r.wall_time / r.n,
            **{f"{c}_per_prompt": getattr(r, c) / r.n for c in metrics.columns if c.startswith(TOKENS_BY_ROLE)},
            "_order": order[r.method],
        })
    frame = pd.DataFrame(rows)
    frame["_model"] = frame["model"].map({m: i for i, m in enumerate(dict.fromkeys(metrics["model"]))})
    return frame.sort_values(["_model", "_order"], kind="stable").drop(columns=["_model", "_order"])


def render_tables(reward: pd.DataFrame | None = None, alpaca: pd.DataFrame | None = None, task: str | None = None,
                  names=None) -> tuple[str, str, pd.DataFrame]:
    """(main quality tables, the whole markdown document, the numeric CSV table)."""
    if reward is None and alpaca is None:
        raise ValueError("nothing to report: give reward metrics, AlpacaEval metrics, or both")
    blocks, csv, costs = [], [], []
    if reward is not None:
        table, sources = quality_table("reward", reward, task, names)
        blocks += ["## Gold reward (mean ± s.e.)", table, KL_LEGEND, *_footnotes(sources)]
        csv.append(numeric_table("reward", reward, task, names))
        costs.append(reward)
    if alpaca is not None:
        official = official_lc(alpaca)
        task = "instruction" if official else None  # no paper number beside an LC that is not the official one
        table, sources = quality_table("alpaca", alpaca, task, names)
        judges, glms = ", ".join(dict.fromkeys(alpaca["judge"])), ", ".join(dict.fromkeys(alpaca["glm"]))
        blocks += ["## AlpacaEval 2.0: LC win rate ± bootstrap s.e. [95 % bootstrap interval] / win rate ± s.e. (%)",
                   f"Judge: {judges}; GLM: {glms}; instruction difficulty: "
                   f"{', '.join(dict.fromkeys(alpaca['difficulty']))}.", table, KL_LEGEND, *_footnotes(sources),
                   *_lc_notes(alpaca)]
        if official:
            blocks += [f"Public AlpacaEval 2.0 leaderboard ({LEADERBOARD_ANNOTATOR}, as shipped with alpaca_eval):",
                       leaderboard_table()]
        else:
            blocks.append("These win rates are not AlpacaEval 2.0's (its judge, its GLM and its instructions' "
                          "difficulty are needed for that), so neither the paper's numbers nor the leaderboard "
                          "stand beside them: they compare the methods of this run with each other only.")
        csv.append(numeric_table("alpaca", alpaca, task, names))
        costs.append(alpaca)
    main = "\n\n".join(blocks) + "\n"
    cost = pd.concat(costs, ignore_index=True).drop_duplicates(["model", "method"])
    document = "\n\n".join(["# Results", main.rstrip("\n"), "## Cost per prompt", cost_table(cost)]) + "\n"
    return main, document, pd.concat(csv, ignore_index=True)


def _lc_notes(alpaca: pd.DataFrame) -> list[str]:
    """The evaluate stage's word on an LC that is alpaca_eval's baseline's or missing (``lc_note``)."""
    notes = alpaca.get("lc_note", pd.Series(dtype=object)).fillna("")
    return [f"{r.model}/{r.method}: {note}." for r, note in zip(alpaca.itertuples(), notes) if note]


def _footnotes(sources: list[str]) -> list[str]:
    return ["Paper numbers: " + "; ".join(sources) + "."] if sources else []


COST_COLUMNS = ["n", "tokens_mean", "passes", "tokens_encoded", "wall_time"]
REWARD_COLUMNS = ["model", "method", "reward_mean", "reward_se", *COST_COLUMNS]
ALPACA_COLUMNS = ["model", "method", "judge", "glm", "difficulty", "length_controlled_winrate", "lc_standard_error",
                  "lc_bootstrap_se", "lc_low", "lc_high", "win_rate", "standard_error", *COST_COLUMNS]


def claims_section(reward_scores_path, alpaca: pd.DataFrame | None, alpaca_dir,
                   value_accuracies: tuple[float | None, float | None] = (None, None),
                   world_scores: dict | None = None, reward: pd.DataFrame | None = None,
                   sweeps: list[dict] = ()) -> tuple[str, pd.DataFrame]:
    """The paper's claims tested with paired differences over prompts, per setting present;
    ``value_accuracies``: the explicit and implicit values' held-out pairwise accuracies;
    ``world_scores``: (model, method) -> the tiny world's own score of the outputs; ``reward``: the
    reward metrics, and ``sweeps``: the frontier sweeps, for the claims against fine-tuning."""
    blocks, frames = [], []
    if reward_scores_path:
        values, added = reward_values(reward_scores_path), sweep_points(sweeps)
        claims = paired_claims(values, added)
        if reward is not None:
            claims = claims.assign(detail=default_details(claims, reward))
            claims = pd.concat([claims, finetuning_claims(values, reward, list(sweeps))], ignore_index=True)
            order = {m: i for i, m in enumerate(dict.fromkeys(claims["model"]))}
            claims = claims.sort_values("model", key=lambda c: c.map(order), kind="stable", ignore_index=True)
        claims = claims.assign(metric="gold reward")
        blocks += ["## Paper claims, gold reward paired over test prompts", claims_markdown(claims, "reward")]
        blocks += [text] if (text := details_markdown(claims)) else []
        frames.append(claims)
    if alpaca is not None:
        claims = paired_claims(preference_values(alpaca, alpaca_dir)).assign(metric="judge preference")
        blocks += ["## Paper claims, the judge's preference over the reference paired over instructions",
                   claims_markdown(claims, "preference")]
        frames.append(claims)
    note = ivg_parts_note(pd.concat(frames, ignore_index=True), *value_accuracies, world_scores) if frames else ""
    blocks += [note] if note else []
    if not blocks:
        return "", pd.DataFrame()
    blocks.append("Verdict: *holds* when the 95 % interval of the paired difference lies above 0, *fails* "
                  "when it lies below, *not resolved* otherwise; a claim *within … or above* holds when the "
                  "interval reaches 0 or lies above it.")
    return "\n\n".join(blocks) + "\n", pd.concat(frames, ignore_index=True)


def world_scores(reward: pd.DataFrame | None) -> dict | None:
    """(model, method) -> mean world score, where the metrics carry it (the tiny world's gold reward)."""
    if reward is None or "world_score_mean" not in reward:
        return None
    return {(r.model, r.method): r.world_score_mean for r in reward.itertuples()}


def world_score_table(reward: pd.DataFrame) -> str:
    """Gold reward beside the world's own score of the same outputs, per (method, model)."""
    models = list(dict.fromkeys(reward["model"]))
    cells = {(r.model, r.method): f"{_num(r.reward_mean, 2)} ± {_num(r.reward_se, 2)} / "
                                  f"{_num(r.world_score_mean, 2)} ± {_num(r.world_score_se, 2)}" for r in reward.itertuples()}
    rows = [[method, *(cells.get((model, method), "") for model in models)] for method in ordered(reward["method"])]
    return "\n\n".join([
        "## Gold reward / the world's own score of the same outputs (mean ± s.e.)",
        "The tiny world's score is what its gold reward model was trained to predict (the sentiment words' "
        "signed intensities, summed). Where a method's two numbers part from the others', it has found texts "
        "the reward model misjudges.",
        markdown(["method", *models], rows)])


def headroom_markdown(table: pd.DataFrame) -> str:
    rows = [[r.model, f"{r.base:.2f}", f"{r.best_method} {r.best:.2f}", f"{r.ceiling:.2f}", f"{r.share:.0%}",
             "saturated" if r.share > SATURATED else "headroom"] for r in table.itertuples()]
    samples = int(table["samples"].iloc[0]) if len(table) else 0
    return "\n\n".join([
        "## Headroom: the best method against the best base-policy sample",
        markdown(["model", "base", "best method", f"ceiling (best of {samples} base-policy samples)",
                  "share of the way", f"verdict (saturated above {SATURATED:.0%})"], rows)])


def run_report(reward_metrics_path, alpaca_metrics_path, out_dir, task: str | None = None,
               paper_names: dict[str, str] | None = None, reward_scores_path=None, samples_path=None,
               value_accuracies: tuple[float | None, float | None] = (None, None), config_name: str | None = None,
               sweeps: list[dict] = ()) -> str:
    """Write ``tables.md``, ``tables.csv``, ``claims.csv`` (with reward metrics and the base policy's
    samples, ``headroom.csv``) and the figures; return the main tables, the headroom and the claims, to print.

    Either metrics path may be None (a run evaluates reward tasks or AlpacaEval, or both). The claims
    read the per-prompt gold rewards (``reward_scores_path``) and the annotations beside the AlpacaEval
    metrics (``<dir of metrics.csv>/<model>/<method>/annotations.json``). ``sweeps``: the frontier sweeps
    of the config (the report slice's ``frontiers``); with reward metrics, the frontier plots of each model.
    """
    reward = read_csv(reward_metrics_path, REWARD_COLUMNS) if reward_metrics_path else None
    alpaca = read_csv(alpaca_metrics_path, ALPACA_COLUMNS) if alpaca_metrics_path else None
    main, document, numbers = render_tables(reward, alpaca, task, paper_names)
    scores = world_scores(reward)
    claims_md, claims = claims_section(reward_scores_path, alpaca,
                                       Path(alpaca_metrics_path).parent if alpaca_metrics_path else None,
                                       value_accuracies, scores, reward, sweeps)
    out = Path(out_dir)
    room = headroom(reward, samples_path) if reward is not None and samples_path else None
    if room is not None:
        write_csv(room, out / "headroom.csv")
        claims_md = headroom_markdown(room) + "\n\n" + claims_md
    if scores:
        claims_md = world_score_table(reward) + "\n\n" + claims_md
    if claims_md:
        main = f"{main}\n{claims_md}"
        document = document.replace("## Cost per prompt", f"{claims_md}\n## Cost per prompt")
    write_text(name_heading(document, config_name), out / "tables.md")
    write_csv(numbers, out / "tables.csv")
    write_csv(claims, out / "claims.csv")
    if reward is not None:
        plot_by_method(reward, "reward_mean", "reward_se", "gold reward", out / "reward_by_method.png",
                       line=(float(room["ceiling"].iloc[0]), "best base-policy sample") if room is not None and len(room)
                       else None)
        for name, costs in COST_FIGURES:
            plot_vs_cost(reward, "reward_mean", "gold reward", out / f"reward_{name}.png", se="reward_se", costs=costs)
        if sweeps:
            plot_frontiers(reward, list(sweeps), out)
    if alpaca is not None:
        plot_by_method(alpaca, "length_controlled_winrate", "lc_standard_error", "LC win rate (%)",
                       out / "alpaca_by_method.png", low="lc_low", high="lc_high",
                       line=(50.0, "as good as the reference"))
        for name, costs in COST_FIGURES:
            plot_vs_cost(alpaca, "length_controlled_winrate", "LC win rate (%)", out / f"alpaca_{name}.png",
                         se="lc_standard_error", low="lc_low", high="lc_high", costs=costs)
    return main
