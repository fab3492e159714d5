"""The plan command: its pass counts are the decoder's, its times a roofline, and it prints a budget."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import toy_generation
from valueguide import cli
from valueguide.config import load_config
from valueguide.decoding import run_generate
from valueguide.plan import (CANDIDATE_FEED, HARDWARE, PASS_OVERHEAD, TEXT_FEED, Planner, jobs_per_stage,
                             pass_seconds)

ROOT = Path(__file__).resolve().parents[1]
H100 = HARDWARE["h100"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_generation.build(tmp_path_factory.mktemp("toy"))


@pytest.mark.parametrize("method", ["base", "ivg", "bon_gold"])
def test_the_plan_counts_the_forward_passes_the_decoder_makes(world, method):
    config, out = toy_generation.config(), world / f"{method}.parquet"
    df = run_generate(config, "large", method, [(world / "prompts.parquet", out)], world_dir=world,
                      value_path=world / "value", tuned_path=world / "tuned")[str(out)]
    steps, size = config["generate"]["max_new_tokens"], config["generate"]["batch_size"]
    # The plan assumes rows run to max_new_tokens; here some row of every batch does.
    assert (df.n_tokens.groupby(df.index // size).max() == steps).all()
    measured = pd.DataFrame([json.loads(p) for p in df.forward_passes]).sum().round(2).to_dict()
    cost, sampled = Planner(config, H100, prompt_tokens=4).generate("large", method, len(df))
    assert measured == cost.passes
    rows = {"base": 1, "ivg": 4, "bon_gold": 4}[method]
    assert sampled == len(df) * rows * steps


def test_a_scorer_with_another_vocabulary_streams_its_own_tokens():
    """Tulu reads Mistral's text in Llama-2's tokens: a prefill, then TEXT_FEED of its tokens per
    guided token after each chunk, not the whole row again (155 M tokens per model before)."""
    config = load_config(ROOT / "config.yaml", ROOT / "config" / "alpaca_eval.yaml")
    cost, sampled = Planner(config, H100, prompt_tokens=100).generate("mistral", "cbs_implicit", 805)
    batches, chunks, rows = 101, math.ceil(1536 / 30), 8 * 4  # 805 prompts / 8; CBS(2, 2, 30)
    assert cost.passes == {"guided": batches * 1536, "tuned": batches * (1 + chunks),
                           "untuned": batches * (1 + chunks)}
    assert cost.tokens["tuned"] == pytest.approx(batches * (8 * 100 + rows * 1536 * TEXT_FEED))
    assert cost.tokens["tuned"] < 6e6 and cost.tokens["guided"] == batches * (8 * 100 + rows * 1535)
    assert sampled == 805 * 4 * 1536


def test_token_level_guidance_across_vocabularies_books_its_candidates():
    config = load_config(ROOT / "config.yaml", ROOT / "config" / "alpaca_eval.yaml")
    cost, _ = Planner(config, H100, prompt_tokens=100).generate("mistral", "eft", 805)
    per_step = 8 * (TEXT_FEED + 50 * CANDIDATE_FEED["lm"])  # 8 rows a batch, top-50 candidates
    assert cost.passes["tuned"] == cost.passes["guided"] == 101 * 1536
    assert cost.tokens["tuned"] == pytest.approx(101 * (8 * 100 + 1535 * per_step))


def test_a_pass_costs_its_weights_or_its_flops_whichever_is_slower():
    mistral = (7.24e9, 7.24e9)
    assert pass_seconds(mistral, 1, H100) == pytest.approx(PASS_OVERHEAD + 2 * 7.24e9 / H100.bandwidth)
    assert pass_seconds(mistral, 1e5, H100) == pytest.approx(PASS_OVERHEAD + 2 * 7.24e9 * 1e5 / H100.flops)
    mixtral = (46.7e9, 12.9e9)  # all experts are read, one in four computes
    assert pass_seconds(mixtral, 1, H100) > 6 * pass_seconds(mistral, 1, H100) - 6 * PASS_OVERHEAD
    assert pass_seconds(None, 1, H100) is None


def test_jobs_per_stage_follow_shards_and_the_world():
    config = load_config(ROOT / "config.yaml")
    config["generate"]["shards"] = 2
    jobs = jobs_per_stage(config)
    pairs = len(config["generate"]["large_models"]) * len(config["generate"]["methods"])
    assert (jobs["generate"], jobs["merge_shards"]) == (2 * pairs, pairs)
    assert jobs["world_lm"] == len(config["world"]["models"])
    assert "fetch" not in jobs


def test_the_plan_command_prints_the_budget_of_the_alpaca_eval_run(capsys):
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml"), str(ROOT / "config" / "alpaca_eval.yaml")]) == 0
    out = capsys.readouterr().out
    for line in ["generate           56", "merge_shards       14", "total              79",
                 "evaluate_alpaca: 11270 GPT-4-turbo judgements (API, no GPU)"]:  # 7 methods on 2 models
        assert line in out
    assert "alpaca/mixtral/cbs_implicit           4     4.9M  guided 155.1k / " in out
    assert "alpaca/mixtral/ivg                    4     4.9M  guided 155.1k / " in out
    stages = dict(line.split(None, 1) for line in out.split("(sum over its jobs):\n", 1)[1].splitlines()[:5])
    assert set(stages) == {"sample", "fit_value", "fit_implicit", "generate", "total"}
    assert stages["generate"].strip().endswith(" h") and "?" not in out
