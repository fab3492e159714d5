"""Stage evaluate: gold rewards and their cost, alpaca_eval outputs, judges and win rates."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alpaca_eval.metrics import glm_winrate
from scipy.special import expit

from valueguide.artifacts import ArtifactError, read_json, read_parquet, write_parquet
from valueguide.decoding.method_spec import Method
from valueguide.evaluate import read_csv
from valueguide.evaluate.alpaca import (
    alpaca_settings,
    reference_outputs,
    run_evaluate_alpaca,
    write_model_outputs,
)
from valueguide.evaluate.lc import bootstrap_lc, lc_of_each, win_rates
from valueguide.evaluate.gamed import CONCISE, VERBOSE, fit_difficulty, gamed_frame, gamed_outputs, write_gamed
from valueguide.evaluate.judges import LocalJudge, MissingAPIKeyError
from valueguide.evaluate.reward_task import evaluate_reward, run_evaluate_reward, summarize_rewards
from valueguide.prompts import world_instruction_prompts
from valueguide.reward import RewardModel


VAS = {"token": {"kind": "explicit", "top_k": 20}}


class WordReward:
    """A stub gold reward: +1 per "good", -1 per "bad" in the text."""

    def score(self, texts):
        return np.array([t.split().count("good") - t.split().count("bad") for t in texts], dtype=float)


def _generations(prompts: list[str], outputs: list[str], passes: dict, tokens: dict, wall: float = 0.5,
                 ids=None, candidates: dict | None = None, kl=0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "prompt_id": ids if ids is not None else np.arange(len(prompts)), "prompt": prompts, "output": outputs,
        "output_ids": [[1] * len(o.split()) for o in outputs], "n_tokens": [len(o.split()) for o in outputs],
        "forward_passes": json.dumps(passes), "tokens_encoded": json.dumps(tokens),
        "candidate_tokens": json.dumps(candidates or {}), "wall_time": wall, "kl": kl})


def test_rewards_score_prompt_plus_output_and_summaries_carry_cost(tmp_path):
    prompts = ["good film", "bad film", "the film", "a film"]
    write_parquet(_generations(prompts, [" good", " good good", " bad", " good"], {"guided": 3.0}, {"guided": 10.0}),
                  tmp_path / "base.parquet")
    write_parquet(_generations(prompts, [" bad"] * 4, {"guided": 5.0, "value": 2.5}, {"guided": 20.0, "value": 8.0},
                               wall=1.25, candidates={"value": 3.0}), tmp_path / "vas.parquet")
    base = evaluate_reward(tmp_path / "base.parquet", WordReward(), "gpt2-large", "base")
    vas = evaluate_reward(tmp_path / "vas.parquet", WordReward(), "gpt2-large", "vas")
    # prompt + output is what is scored: "good film" + " good" -> 2, "bad film" + " good good" -> 1, ...
    assert base["reward"].tolist() == [2.0, 1.0, -1.0, 1.0]

    table = summarize_rewards([base, vas], {"base": Method(), "vas": Method.from_config(VAS)}).set_index("method")
    assert "world_score_mean" not in table  # not the tiny world's gold reward: no world score
    assert table.loc["base", "reward_mean"] == pytest.approx(0.75)
    assert table.loc["base", "reward_se"] == pytest.approx(np.std([2, 1, -1, 1], ddof=1) / 2)
    assert table.loc["vas", "reward_mean"] == pytest.approx(-1.0)  # 0, -2, -1, -1
    assert table.loc["base", "n"] == 4 and table.loc["base", "tokens_mean"] == pytest.approx(1.25)
    # cost: per-row shares summed over rows; a role a method does not use costs 0
    assert table.loc["base", "passes_guided"] == 12.0 and table.loc["base", "passes_value"] == 0.0
    assert table.loc["vas", "passes"] == 30.0 and table.loc["vas", "passes_value"] == 10.0
    # tokens encoded: the rows' (28 a row) and the candidates' (3 a row)
    assert table.loc["vas", "tokens_encoded"] == 124.0 and table.loc["vas", "wall_time"] == 5.0


@pytest.mark.parametrize("config,kind,mean,se", [
    (VAS, "exact", 0.5, np.std([0.2, 0.4, 0.6, 0.8], ddof=1) / 2),
    ({"chunk": {"scorer": "explicit", "W": 1, "K": 16}}, "upper_bound", math.log(16) - 15 / 16, math.nan),
    ({"chunk": {"scorer": "explicit", "W": 4, "K": 4, "L": 5}}, "undefined", math.nan, math.nan),
])
def test_the_kl_of_each_method_is_its_generations_mean_its_bound_or_not_defined(tmp_path, config, kind, mean, se):
    prompts = ["good film", "bad film", "the film", "a film"]
    write_parquet(_generations(prompts, [" good"] * 4, {"guided": 1.0}, {"guided": 4.0}, kl=[0.2, 0.4, 0.6, 0.8]),
                  tmp_path / "g.parquet")
    scored = evaluate_reward(tmp_path / "g.parquet", WordReward(), "gpt2-large", "m")
    assert scored["kl"].tolist() == [0.2, 0.4, 0.6, 0.8]  # each generation's, beside its reward
    row = summarize_rewards([scored], {"m": Method.from_config(config)}).iloc[0]
    assert row.kl_kind == kind
    for got, want in ((row.kl_mean, mean), (row.kl_se, se)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    # generations written before the kl column: the exact KL is unknown, not 0
    old = scored.drop(columns="kl")
    assert math.isnan(summarize_rewards([old], {"m": Method.from_config(VAS)}).iloc[0].kl_mean)


def test_reward_stage_uses_the_gold_reward_and_writes_scores_and_metrics(tiny_config, tiny_world, tmp_path):
    prompts = ["a good film", "the film was"]
    write_parquet(_generations(prompts, [" superb and fun", " bad"], {"guided": 1.0}, {"guided": 4.0}),
                  tmp_path / "g.parquet")
    with pytest.raises(ValueError, match="model/method"):
        run_evaluate_reward(tiny_config, {"gpt2-large": str(tmp_path / "g.parquet")}, tmp_path / "s.parquet",
                            tmp_path / "m.csv", world_dir=tiny_world)
    with pytest.raises(ValueError, match=r"methods \['nameless'\], which the config's generate.methods does not name"):
        run_evaluate_reward(tiny_config, {"gpt2-large/nameless": str(tmp_path / "g.parquet")}, tmp_path / "s.parquet",
                            tmp_path / "m.csv", world_dir=tiny_world)
    metrics = run_evaluate_reward(tiny_config, {"gpt2-large/base": str(tmp_path / "g.parquet")},
                                  tmp_path / "s.parquet", tmp_path / "m.csv", world_dir=tiny_world)
    gold = RewardModel.load(tiny_config["reward_model"], tiny_world).score(["a good film superb and fun",
                                                                           "the film was bad"])
    scores = read_parquet(tmp_path / "s.parquet", required=["model", "method", "reward", "world_score"])
    np.testing.assert_allclose(scores["reward"], gold, rtol=1e-6)
    # the world's own score of the same texts: "superb" (3.0) and "fun" (0.5); "bad" is no sentiment word
    assert scores["world_score"].tolist() == [3.5, 0.0]
    written = read_csv(tmp_path / "m.csv", required=["reward_mean", "reward_se", "passes_guided", "world_score_mean"])
    assert written["reward_mean"].iloc[0] == pytest.approx(gold.mean()) == pytest.approx(metrics["reward_mean"].iloc[0])
    assert written["world_score_mean"].iloc[0] == pytest.approx(1.75)


def _length_annotations(n: int, preference) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ref_len = rng.integers(80, 300, n)
    model_len = ref_len + rng.normal(150, 120, n).astype(int).clip(-70, None)
    return pd.DataFrame({
        "instruction": [f"instruction {i}" for i in range(n)], "output_1": ["r" * k for k in ref_len],
        "output_2": ["m" * k for k in model_len], "generator_1": "reference", "generator_2": "model",
        "annotator": "test", "preference": preference(model_len - ref_len)})


def _gamed_file(n: int, preference, path: Path, difficulty=None) -> Path:
    """df_gamed.csv for ``n`` instructions whose gamed baselines a length-preferring judge annotated."""
    gamed = {}
    for name, shift in ((VERBOSE, 200), (CONCISE, -60)):
        rng = np.random.default_rng(len(name))
        ref_len = rng.integers(80, 300, n)
        model_len = (ref_len + shift + rng.normal(0, 40, n)).astype(int).clip(5, None)
        gamed[name] = pd.DataFrame({"output_1": ["r" * k for k in ref_len], "output_2": ["m" * k for k in model_len],
                                    "preference": preference(model_len - ref_len)})
    return write_gamed(gamed_frame(gamed, np.zeros(n) if difficulty is None else difficulty), path)


def test_length_controlled_win_rate_discounts_wins_bought_by_length(tmp_path):
    by_judge = lambda d: 1.0 + expit(d / 60.0)  # the judge prefers whichever output is longer
    gamed = _gamed_file(60, by_judge, tmp_path / "df_gamed.csv")
    by_length = _length_annotations(60, by_judge)  # and the model's outputs are longer on average
    m = win_rates(by_length, "length_controlled_v1", gamed)
    assert m["win_rate"] == pytest.approx((by_length["preference"] - 1).mean() * 100)
    assert m["win_rate"] > 65 and m["length_controlled_winrate"] < m["win_rate"] - 10
    assert "glm_preference" in by_length  # alpaca_eval's GLM annotated the frame it was given
    # Control: outputs as long as the references, preferred 70 % of the time, are left about where they are.
    flat = _length_annotations(60, lambda d: np.full(len(d), 1.7))
    jitter = np.random.default_rng(1).integers(-5, 6, 60)
    flat["output_2"] = ["m" * (len(r) + j) for r, j in zip(flat["output_1"], jitter)]
    m = win_rates(flat, "length_controlled_v1", gamed)
    assert m["win_rate"] == pytest.approx(70.0) and m["length_controlled_winrate"] == pytest.approx(70.0, abs=3.0)


def test_the_bootstrap_interval_covers_the_estimate_and_narrows_with_more_instructions(tmp_path):
    widths = []
    for n in (40, 160):
        gamed = _gamed_file(n, lambda d: 1.0 + expit(d / 60.0), tmp_path / f"g{n}.csv")
        rng = np.random.default_rng(n)
        annotations = _length_annotations(n, lambda d: 1.0 + expit(d / 60.0 + rng.normal(0.3, 1.5, len(d))))
        lc = win_rates(annotations.copy(), "length_controlled_v1", gamed)["length_controlled_winrate"]
        spread = bootstrap_lc(annotations, "length_controlled_v1", gamed, n=60, seed=1)
        assert spread["lc_low"] < lc < spread["lc_high"] and spread["lc_bootstrap_se"] > 0
        assert bootstrap_lc(annotations, "length_controlled_v1", gamed, n=60, seed=1) == spread  # seeded
        widths.append(spread["lc_high"] - spread["lc_low"])
    assert widths[1] < 0.75 * widths[0]  # about 1/sqrt(4) of it


def test_worker_processes_give_each_generator_the_numbers_one_process_gives(tmp_path):
    gamed = _gamed_file(40, lambda d: 1.0 + expit(d / 60.0), tmp_path / "g.csv")
    generators = {f"m/{k}": _length_annotations(40, lambda d, k=k: 1.0 + expit(d / 60.0 + k)) for k in range(3)}
    copies = {k: a.copy() for k, a in generators.items()}
    alone = lc_of_each(copies, "length_controlled_v1", gamed, 20, seed=1)
    side_by_side = lc_of_each(generators, "length_controlled_v1", gamed, 20, seed=1, workers=2)
    assert side_by_side == alone
    assert len({m["length_controlled_winrate"] for m, _ in alone.values()}) == 3  # three different generators
    for key, frame in generators.items():  # the GLM's column reaches the caller's frames from the workers too
        pd.testing.assert_series_equal(frame["glm_preference"], copies[key]["glm_preference"])


def test_instruction_difficulty_is_recovered_from_the_generators_annotations():
    n, rng = 80, np.random.default_rng(3)
    truth = rng.normal(0, 1.5, n)
    truth -= truth.mean()
    by_generator = {}
    for g, strength in enumerate((-1.0, 0.0, 0.5, 1.0, 2.0)):
        frame = _length_annotations(n, lambda d: 1.0 + expit(strength - truth + d / 200.0))
        by_generator[f"g{g}"] = frame
    fitted = fit_difficulty(by_generator, n)
    assert np.corrcoef(fitted, truth)[0, 1] > 0.9 and abs(fitted.mean()) < 1e-9


def test_outputs_identical_to_the_references_score_as_alpaca_evals_baseline(tmp_path):
    gamed = _gamed_file(40, lambda d: 1.0 + expit(d / 60.0), tmp_path / "g.csv")
    same = _length_annotations(40, lambda d: np.full(len(d), 1.5)).assign(output_2=lambda f: f["output_1"])
    m = win_rates(same, "length_controlled_v1", gamed)  # alpaca_eval alone: "duplicate labels" (0/0 lengths)
    assert m["length_controlled_winrate"] == 50.0 and m["win_rate"] == 50.0 and "baseline" in m["lc_note"]
    spread = bootstrap_lc(same, "length_controlled_v1", gamed, n=10, seed=1)
    assert spread["lc_low"] == spread["lc_high"] == 50.0
    # Other outputs, each as long as its reference: the length term is still 0/0, so no LC, and a note.
    level = same.assign(output_2=lambda f: f["output_1"].str.replace("r", "m"), preference=1.7)
    m = win_rates(level, "length_controlled_v1", gamed)
    assert math.isnan(m["length_controlled_winrate"]) and m["win_rate"] == pytest.approx(70.0)
    assert "0/0" in m["lc_note"]


def test_instructions_without_a_preference_are_left_out_as_alpaca_eval_leaves_them_out(tmp_path):
    from valueguide.evaluate.lc import _local_hub_files

    n = 40
    difficulty = np.linspace(-2.0, 2.0, n)  # instructions differ, so which ones are averaged matters
    gamed = _gamed_file(n, lambda d: 1.0 + expit(d / 60.0), tmp_path / "g.csv", difficulty=difficulty)
    annotations = _length_annotations(n, lambda d: 1.0 + expit(d / 60.0 + 0.5))
    annotations.loc[[n - 3, n - 2, n - 1], "preference"] = np.nan  # the hardest three: the judge gave no answer
    ours = win_rates(annotations, "length_controlled_v1", gamed)
    # alpaca_eval's annotators return only the annotations with a preference; its GLM then scores those
    returned = annotations[annotations["preference"].notna()].drop(columns="glm_preference")
    with _local_hub_files({"df_gamed.csv": gamed}):
        theirs = glm_winrate.get_length_controlled_winrate(returned, save_weights_dir=None)
    assert ours["length_controlled_winrate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-9)
    assert ours["win_rate"] == pytest.approx(theirs["win_rate"]) and ours["n_total"] == n - 3
    assert annotations["glm_preference"].isna().tolist() == [False] * (n - 3) + [True] * 3


def test_alpaca_stage_scores_a_generator_that_returns_the_references(tiny_config, tiny_world, tmp_path):
    prompts_path, paths = _instruction_run(tmp_path, n=8)
    prompts = read_parquet(prompts_path)
    write_parquet(_generations(list(prompts.prompt), list(prompts.reference), {"guided": 1.0}, {"guided": 5.0}),
                  tmp_path / "copy.parquet")
    paths["mistral/copy"] = str(tmp_path / "copy.parquet")
    config = {**tiny_config, "evaluate": {"alpaca": {"bootstrap": 5}},
              "generate": {"methods": {**tiny_config["generate"]["methods"], "copy": {}}}}
    table = run_evaluate_alpaca(config, paths, prompts_path, tmp_path / "alpaca", world_dir=tiny_world)
    table = table.set_index("method")
    assert table.loc["copy", "length_controlled_winrate"] == 50.0 and table.loc["copy", "win_rate"] == 50.0
    assert "baseline" in table.loc["copy", "lc_note"] and table.loc["ivg", "lc_note"] == ""
    assert math.isfinite(table.loc["ivg", "length_controlled_winrate"])


def test_alpaca_settings_default_to_the_leaderboards_glm():
    settings = alpaca_settings({})
    assert settings["glm"] == "length_controlled_v1" and settings["gamed_path"] is None and settings["bootstrap"] > 0
    with pytest.raises(ValueError, match="not one of"):
        alpaca_settings({"evaluate": {"alpaca": {"glm": "length_controlled_v9"}}})


class LexiconReward:
    """The tiny world's sentiment read off its own word lists, +1 per positive word and -1 per negative
    one, plus 0.1 per word: a judge with a length bias, as GPT-4 has."""

    def __init__(self):
        from valueguide.world.corpus import WORDS

        self.sign = {w: (1 if pol == "pos" else -1) for pol, kinds in WORDS.items() for ws in kinds.values()
                     for phrase in ws for w in phrase.split() if len(w) > 3}

    def score(self, texts):
        return np.array([sum(self.sign.get(w, 0) for w in t.split()) + 0.1 * len(t.split()) for t in texts])


def test_padding_buys_raw_win_rate_but_not_length_controlled_win_rate(tmp_path):
    """On tiny-world instructions: outputs as good as the references, then the same outputs padded with
    sentences that say nothing. The padding wins a length-biased judge over; LC takes the gain back."""
    from valueguide.world.corpus import filler, make_instructions, make_review

    n = 120
    pairs = make_instructions(n, seed=5)
    references = [{"instruction": i, "output": r, "generator": "reference", "dataset": "t"} for i, r in pairs]
    rng = np.random.default_rng(9)
    plain = [{**ref, "generator": "plain", "output": make_review(rng, agreement=0.5).text} for ref in references]
    padded = [{**row, "generator": "padded", "output": f"{row['output']} {filler(rng, int(rng.integers(1, 4)))}"}
              for row in plain]
    judge = LocalJudge(LexiconReward())

    def annotate(outputs):
        frame = judge.annotate(outputs, references)
        frame.index = range(n)
        return frame

    gamed = {name: annotate(rows) for name, rows in gamed_outputs(references, seed=1).items()}
    ours = {"plain": annotate(plain), "padded": annotate(padded)}
    path = write_gamed(gamed_frame(gamed, fit_difficulty({**gamed, **ours}, n)), tmp_path / "df_gamed.csv")
    m = {name: win_rates(frame, "length_controlled_v1", path) for name, frame in ours.items()}
    raw_gain = m["padded"]["win_rate"] - m["plain"]["win_rate"]
    lc_gain = m["padded"]["length_controlled_winrate"] - m["plain"]["length_controlled_winrate"]
    assert raw_gain > 10, raw_gain
    assert lc_gain < raw_gain / 2, (raw_gain, lc_gain)


def test_local_judge_is_deterministic_and_prefers_the_higher_reward():
    judge = LocalJudge(WordReward())
    model = [{"instruction": "say", "output": " good good", "generator": "m"},
             {"instruction": "say", "output": " bad", "generator": "m"},
             {"instruction": "tell", "output": " film", "generator": "m"}]
    refs = [{"instruction": "say", "output": " good", "generator": "reference"},
            {"instruction": "say", "output": " good", "generator": "reference"},
            {"instruction": "tell", "output": " the", "generator": "reference"}]
    first = judge.annotate(model, refs)
    pd.testing.assert_frame_equal(first, judge.annotate(model, refs))
    np.testing.assert_allclose(first["preference"], [1 + expit(1.0), 1 + expit(-2.0), 1.5])
    assert (first[["output_1", "output_2", "generator_1", "generator_2"]].iloc[0].tolist()
            == [" good", " good good", "reference", "m"])
    with pytest.raises(ValueError, match="same instructions"):
        judge.annotate(model[::-1], refs)


def test_model_outputs_round_trip_in_alpaca_eval_format(tmp_path):
    from alpaca_eval.utils import load_or_convert_to_dataframe

    prompts = world_instruction_prompts(4, seed=3)
    gens = _generations(list(prompts.prompt[::-1]), ["one", "two", "three", "four"], {}, {}, ids=[3, 2, 1, 0])
    records = write_model_outputs(gens, prompts, "mistral_ivg", tmp_path / "model_outputs.json")
    loaded = load_or_convert_to_dataframe(str(tmp_path / "model_outputs.json"))
    assert set(loaded.columns) == {"instruction", "output", "generator", "dataset"}
    assert loaded["instruction"].tolist() == prompts["prompt"].tolist()  # prompt_id order
    assert loaded["output"].tolist() == ["four", "three", "two", "one"]
    assert set(loaded["generator"]) == {"mistral_ivg"} and loaded.to_dict("records") == records
    refs = reference_outputs(prompts)
    assert [r["output"] for r in refs] == prompts["reference"].tolist()
    with pytest.raises(ArtifactError, match="one per prompt"):
        write_model_outputs(gens.iloc[:3], prompts, "x", tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="other prompts"):
        write_model_outputs(gens.assign(prompt="something else"), prompts, "x", tmp_path / "bad.json")


def _instruction_run(tmp_path: Path, n: int = 6) -> tuple[Path, dict]:
    prompts = world_instruction_prompts(n, seed=7)
    write_parquet(prompts, tmp_path / "prompts.parquet")
    paths = {}
    for method, text in (("base", " a film"), ("ivg", " a good good film")):
        gens = _generations(list(prompts.prompt), [text] * n, {"guided": 2.0}, {"guided": 9.0})
        write_parquet(gens, tmp_path / f"{method}.parquet")
        paths[f"mistral/{method}"] = str(tmp_path / f"{method}.parquet")
    return tmp_path / "prompts.parquet", paths


def test_alpaca_stage_with_the_local_judge(tiny_config, tiny_world, tmp_path):
    prompts_path, paths = _instruction_run(tmp_path)
    out = tmp_path / "alpaca"
    table = run_evaluate_alpaca(tiny_config, paths, prompts_path, out, judge="local", world_dir=tiny_world).set_index("method")
    prompts = read_parquet(prompts_path)
    gold = RewardModel.load(tiny_config["reward_model"], tiny_world)
    r_ref = gold.score([p + r for p, r in zip(prompts.prompt, prompts.reference)])
    for method, text in (("base", " a film"), ("ivg", " a good good film")):
        annotations = pd.DataFrame(read_json(out / "mistral" / method / "annotations.json"))
        expected = 1 + expit(gold.score([p + text for p in prompts.prompt]) - r_ref)
        np.testing.assert_allclose(annotations["preference"], expected, rtol=1e-6)
        assert table.loc[method, "win_rate"] == pytest.approx((expected - 1).mean() * 100)
        assert math.isfinite(table.loc[method, "length_controlled_winrate"])
        assert read_json(out / "mistral" / method / "model_outputs.json")[0]["generator"] == f"mistral_{method}"
    assert table.loc["ivg", "avg_length"] == len(" a good good film") and table.loc["ivg", "passes"] == 12.0
    assert table.loc["base", "kl_kind"] == "exact" and table.loc["base", "kl_mean"] == 0.0
    assert table.loc["ivg", "kl_kind"] == "undefined" and math.isnan(table.loc["ivg", "kl_mean"])
    assert read_csv(out / "metrics.csv")["judge"].tolist() == ["valueguide_local_reward"] * 2


def test_gpt4_judge_without_a_key_fails_before_anything_is_judged(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        # The prompts do not even exist: the key is checked before any input is read.
        run_evaluate_alpaca({"reward_model": "unused"}, {"mistral/base": str(tmp_path / "g.parquet")},
                            tmp_path / "missing.parquet", tmp_path / "out", judge="gpt4_turbo")
    assert not (tmp_path / "out").exists()


def test_gpt4_judge_passes_the_key_to_alpaca_eval_but_never_writes_it(tmp_path, monkeypatch, caplog):
    import alpaca_eval.decoders.openai as openai_decoder

    secret = "sk-valueguide-test-7f3a9c"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    keys_seen = []

    def fake_openai(args, is_chat, openai_api_keys=None, **kwargs):
        """Stands in for the network call only: alpaca_eval's prompt, parsing and metrics all run."""
        keys_seen.append(openai_api_keys)
        top = [{"token": "m", "logprob": math.log(0.2)}, {"token": "M", "logprob": math.log(0.8)}]
        return [{"text": "M", "total_tokens": 10.0, "logprobs": {"content": [{"token": "M", "logprob": top[1]["logprob"],
                                                                             "top_logprobs": top}]}}
                for _ in args[0]]

    monkeypatch.setattr(openai_decoder, "_openai_completion_helper", fake_openai)
    prompts_path, paths = _instruction_run(tmp_path)
    out = tmp_path / "alpaca"
    with caplog.at_level("DEBUG"):
        table = run_evaluate_alpaca({"reward_model": "unused", "seed": 1, "generate": {"methods": {"base": {}, "ivg": {}}}},
                                    paths, prompts_path, out, judge="gpt4_turbo")
    assert keys_seen and all(k == [secret] for k in keys_seen)
    assert set(table["judge"]) == {"weighted_alpaca_eval_gpt4_turbo"} and table["n"].tolist() == [6, 6]
    # alpaca_eval randomises which output the judge sees first; it maps "M" back to each side.
    annotations = pd.DataFrame(read_json(out / "mistral" / "ivg" / "annotations.json"))
    assert set(np.round(annotations["preference"], 6)) <= {1.2, 1.8}
    written = [p for p in out.rglob("*") if p.is_file()]
    assert out / "judge_cache.json" in written
    assert not [p for p in written if secret in p.read_text()]
    assert secret not in caplog.text
