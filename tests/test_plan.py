"""The plan command: its pass counts are the decoder's, its times a roofline, and it prints a budget."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import toy_generation
from valueguide import cli
from valueguide.config import load_config
from valueguide.generate import run_generate
from valueguide.model_size import WORLD_VOCAB, model_params
from valueguide.plan import (CANDIDATE_FEED, HARDWARE, JUDGE_TEMPLATE_TOKENS, PASS_OVERHEAD, TEXT_FEED, Planner,
                             _duration, finetune_warnings, jobs_per_stage, memory_warnings, pass_seconds, render_plan)

ROOT = Path(__file__).resolve().parents[1]
H100 = HARDWARE["h100"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_generation.build(tmp_path_factory.mktemp("toy"))


@pytest.mark.parametrize("method", ["base", "ivg", "bon_gold", "fudge"])
def test_the_plan_counts_the_forward_passes_the_decoder_makes(world, method):
    config, out = toy_generation.config(), world / f"{method}.parquet"
    df = run_generate(config, "large", method, [(world / "prompts.parquet", out)], world_dir=world,
                      value_path=world / "value", tuned_path=world / "tuned",
                      classifier_path=world / "classifier")[str(out)]
    steps, size = config["generate"]["max_new_tokens"], config["generate"]["batch_size"]
    # The plan assumes rows run to max_new_tokens; here some row of every batch does.
    assert (df.n_tokens.groupby(df.index // size).max() == steps).all()
    measured = pd.DataFrame([json.loads(p) for p in df.forward_passes]).sum().round(2).to_dict()
    cost, sampled = Planner(config, H100, prompt_tokens=4).generate("large", method, len(df))
    assert measured == cost.passes
    rows = {"base": 1, "ivg": 4, "bon_gold": 4, "fudge": 1}[method]
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
    assert jobs["fit_classifier"] == 1  # method fudge reads FUDGE's classifier
    config["generate"]["methods"].pop("fudge")
    assert "fit_classifier" not in jobs_per_stage(config)


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


def _alpaca_plan(capsys, *flags) -> str:
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml"), str(ROOT / "config" / "alpaca_eval.yaml"),
                     *flags]) == 0
    return capsys.readouterr().out


def test_the_plan_warns_when_a_job_does_not_fit_the_card(capsys):
    """Mixtral with IVG loads 46.7 + 3 × 6.74 billion parameters, 133.8 GB in bf16: not one H100's 80 GB."""
    warnings = [line for line in _alpaca_plan(capsys).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "7 generate job(s) of mixtral do not fit one H100 SXM 80 GB" in warnings[0]
    assert "The largest, ivg, loads 133.8 GB" in warnings[0]
    assert "one H200 141 GB (--gpu h200)" in warnings[0] and "(--gpus 2)" in warnings[0]
    for flags in (["--gpu", "h200"], ["--gpus", "2"]):  # the config spreads models with device_map: auto
        assert "warning" not in _alpaca_plan(capsys, *flags)


def test_two_cards_do_not_help_a_job_without_device_map_auto():
    config = load_config(ROOT / "config.yaml", ROOT / "config" / "alpaca_eval.yaml")
    planner = Planner({**config, "device_map": None}, H100, prompt_tokens=128)
    [warning] = memory_warnings(planner, gpus=2)
    assert "do not fit one H100 SXM 80 GB" in warning


@pytest.mark.parametrize("name", ["gpt2-small", "gpt2-xl", "tulu", "mistral", "mixtral", "reward"])
def test_a_world_model_is_sized_from_the_world_config(name):
    """Counted as world.lm builds it, parameter for parameter (Mixtral: 2 of 4 experts active)."""
    from valueguide.world.lm import make_lm, make_reward_model

    world = load_config(ROOT / "config.yaml")["world"]
    spec = world["reward"] if name == "reward" else world["models"][name]
    build = make_reward_model if name == "reward" else make_lm
    model = build(spec, WORLD_VOCAB[spec["vocab"]], 0, 0)
    total, active = model_params(f"world:{name}", {"world": world})
    assert total == sum(p.numel() for p in model.parameters())
    if name == "mixtral":
        experts = sum(p.numel() for p in model.model.layers[0].mlp.experts.parameters())
        assert total - active == len(model.model.layers) * experts // 2  # 2 of the 4 experts idle
    else:
        assert active == total


def test_a_model_outside_the_table_is_costed_from_its_config_json(tmp_path, monkeypatch):
    """A hub model: its config.json in the hub cache (offline); Mixtral's own shape gives its card's size."""
    from huggingface_hub import constants

    snapshot = tmp_path / "models--someone--mixtral-copy" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps({
        "model_type": "mixtral", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32000, "num_local_experts": 8,
        "num_experts_per_tok": 2, "tie_word_embeddings": False}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    total, active = model_params("someone/mixtral-copy", {})
    assert total == pytest.approx(46.7e9, rel=1e-3) and active == pytest.approx(12.9e9, rel=2e-3)
    assert model_params("someone/not-cached", {}) is None


def test_the_tiny_world_is_costed_and_an_uncached_model_is_named(capsys):
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "?" not in out and "unknown" not in out
    config = load_config(ROOT / "config.yaml")
    config["models"]["gpt2-xl"]["path"] = "someone/not-in-the-cache"
    out = render_plan(config)
    assert "?" not in out and "/ unknown" in out
    assert "not in valueguide.model_size.PARAMS and no config.json in the hub cache" in out
    assert "someone/not-in-the-cache" in out.splitlines()[-1]


def test_the_judge_is_priced(capsys):
    """805 instructions × 14 outputs, each judged on the template, the instruction and two outputs of at
    most 1,536 tokens, at gpt-4-1106-preview's $10 / M input and $30 / M output tokens."""
    out = _alpaca_plan(capsys)
    tokens_in = JUDGE_TEMPLATE_TOKENS + 128 + 2 * 1536
    usd = 11270 * (tokens_in * 10 + 1 * 30) / 1e6
    assert f"11270 GPT-4-turbo judgements (API, no GPU), at most {tokens_in} tokens in and 1 out each: " \
           f"at most ${usd:,.0f}" in out


def test_the_documented_plan_block_is_what_the_plan_command_prints(capsys):
    readme = (ROOT / "docs" / "REPRODUCE.md").read_text()
    [block] = [text.split("```\n", 1)[0] for text in readme.split("```text\n")[1:] if text.startswith("Jobs per stage")]
    assert block == _alpaca_plan(capsys)


def test_the_documented_budget_table_is_what_the_plan_command_prints(capsys):
    """Each cell of docs/REPRODUCE.md's expected-GPU-time table: the stage's time in the plan of that config."""
    readme = (ROOT / "docs" / "REPRODUCE.md").read_text()
    table = readme.split("**Expected GPU time**", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    cells = {row.split(" | ")[0].strip("| "): [c.strip(" |") for c in row.split(" | ")[1:]] for row in table}
    for column, task in enumerate(["imdb", "tldr", "alpaca_eval", "vas_hh"]):
        for overlay, part in ((), 0), ((f"{task}_refit.yaml",), 1):
            config = load_config(ROOT / "config.yaml", ROOT / "config" / f"{task}.yaml",
                                 *(ROOT / "config" / name for name in overlay))
            stages = Planner(config, H100, prompt_tokens=128).stages()
            for row, stage in (("sample", "sample"), ("fit_value (the authors' values; `_refit`)", "fit_value"),
                               ("fit_classifier (FUDGE)", "fit_classifier"),
                               ("finetune (the DPO and RL baselines)", "finetune"),
                               ("generate (sum over jobs)", "generate")):
                cell = cells[row][column].split("; ")
                if stage == "fit_value" or not overlay:
                    expected = "—" if stage not in stages else "0" if stages[stage] == 0 else _duration(stages[stage])
                    assert cell[part if stage == "fit_value" else 0].split(" (")[0] == expected, (task, row)


def _tuned_config() -> dict:
    """The tiny world's config with a gpt2-large guided (774 M parameters), distilbert-imdb as reward (67 M), a gpt2
    FUDGE classifier (124 M), 100 training prompts x 3 samples of 10 tokens, and three finetune entries, two sampled."""
    config = load_config(ROOT / "config.yaml")
    config["models"]["gpt2-large"]["path"] = "openai-community/gpt2-large"
    config["reward_model"] = "lvwerra/distilbert-imdb"
    config["prompts"]["n_train"] = 100
    config["sample"].update(n=3, max_new_tokens=10)
    config["generate"]["large_models"] = ["gpt2-large"]
    config["finetune"] = {
        "dpo": {"algorithm": "dpo", "beta": 0.1, "epochs": 2, "pairs": {"per_prompt": 2}, "lora": {"r": 8, "alpha": 8}},
        "rl": {"algorithm": "rl", "kl_coef": 0.05, "steps": 5, "batch_size": 4, "generations_per_prompt": 3,
               "lora": None},
        "unsampled": {"algorithm": "dpo", "epochs": 1, "lora": None}}
    config["generate"]["methods"] = {"base": {}, "dpo": {"finetuned": "dpo"}, "rl": {"finetuned": "rl"},
                                     "fudge": {"token": {"kind": "fudge", "beta": 1.0, "top_k": 20}}}
    config["fit_classifier"] = {"backbone": "openai-community/gpt2", "template": "{prompt}", "lr": 1e-3, "batch_size": 8,
                                "epochs": 2}
    return config


def test_the_plan_books_fine_tuning_as_computed_by_hand():
    """DPO: 100 prompts x min(2, C(3, 2)) = 200 pairs, 2 sequences of 6 + 10 tokens, 2 epochs, each token a training
    pass (6 P) and a reference forward (2 P). RL: 5 steps of 4 prompts x 3 rollouts = 12 rows, each step a prefill
    of the 12 prompts and 10 one-token decode passes, then 12 x 16 tokens trained (6 P) beside the reference's and
    the reward model's forwards (2 P, 2 R). LoRA holds the bf16 base only; full tuning 16 bytes a parameter + bf16."""
    config, P, R = _tuned_config(), 774e6, 67e6
    planner = Planner(config, H100, prompt_tokens=6)
    entries = config["finetune"]
    dpo_tokens = 2 * 200 * 16 * 2
    assert planner.finetune(entries["dpo"], "gpt2-large") == (dpo_tokens, pytest.approx(8 * P * dpo_tokens / H100.flops))
    rollouts = 5 * (pass_seconds((P, P), 12 * 6, H100) + 10 * pass_seconds((P, P), 12, H100))
    train = (6 * P + 2 * P + 2 * R) * 5 * 12 * 16 / H100.flops
    assert planner.finetune(entries["rl"], "gpt2-large") == (5 * 12 * 16, pytest.approx(rollouts + train))
    assert planner.stages()["finetune"] == pytest.approx(8 * P * dpo_tokens / H100.flops + rollouts + train)
    assert planner.finetune_weights(entries["dpo"], "gpt2-large") == 2 * P
    assert planner.finetune_weights(entries["rl"], "gpt2-large") == 18 * P + 2 * R
    jobs = jobs_per_stage(config)
    assert (jobs["finetune"], jobs["fit_classifier"]) == (2, 1)  # the entry no method samples has no job
    assert planner.stages()["fit_classifier"] == pytest.approx(6 * 124e6 * 300 * 16 * 2 / H100.flops)  # no frozen pass


def test_a_tuned_copy_streams_its_reference_and_fudge_its_classifier():
    """Sampling a fine-tuned copy also reads the frozen guided model at every step (the KL's reference); FUDGE's
    classifier, a token head in the guided vocabulary, is read like the guided model (no candidate fed)."""
    planner = Planner(_tuned_config(), H100, prompt_tokens=6)
    base, _ = planner.generate("gpt2-large", "base", 40)
    for method, role in (("dpo", "reference"), ("rl", "reference"), ("fudge", "classifier")):
        cost, _ = planner.generate("gpt2-large", method, 40)
        assert set(cost.passes) == {"guided", role}
        assert (cost.passes[role], cost.tokens[role]) == (base.passes["guided"], base.tokens["guided"])
    assert set(planner.job_weights("gpt2-large", "dpo")) == {"guided", "reference"}


def test_a_mixtral_with_lora_does_not_fit_an_h100_to_fine_tune():
    config = load_config(ROOT / "config.yaml", ROOT / "config" / "alpaca_eval.yaml")
    config["finetune"] = {"dpo": {"algorithm": "dpo", "epochs": 1, "lora": {"r": 16, "alpha": 16}}}
    config["generate"]["methods"] = {"base": {}, "dpo": {"finetuned": "dpo"}}
    [warning] = finetune_warnings(Planner(config, H100, prompt_tokens=128))
    assert warning.startswith("warning: finetune dpo of mixtral does not fit one H100 SXM 80 GB: LoRA on the frozen "
                              "bf16 weights holds 93.4 GB")
    assert "one H200 141 GB (--gpu h200)" in warning and "2 × H100 SXM 80 GB with device_map: auto" in warning
    assert not finetune_warnings(Planner(config, HARDWARE["h200"], prompt_tokens=128))


def test_the_plan_command_prints_vas_hh_with_its_fine_tuning(capsys):
    """VAS's own setting: LoRA DPO and RL of the 7B guided model, booked beside the decoding, on one H100."""
    files = [ROOT / "config.yaml", ROOT / "config" / "vas_hh.yaml"]
    assert cli.main(["plan", "--config", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "Fine-tuning (stage finetune; prompts of 128 tokens assumed)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("  dpo/", "  rl/"))]
    assert [row[:5] for row in rows] == [["dpo/llama-2-7b-hh", "dpo", "LoRA", "36.7M", "80.4k"],
                                         ["rl/llama-2-7b-hh", "rl", "LoRA", "36.7M", "2512"]]
    planner = Planner(load_config(*files), H100, prompt_tokens=128)
    stages = planner.stages()
    config = planner.config
    assert stages["finetune"] == pytest.approx(sum(planner.finetune(config["finetune"][name], "llama-2-7b-hh")[1]
                                                   for name in ("dpo", "rl")))
    for stage in ("fit_value", "fit_classifier", "fit_implicit", "finetune", "generate"):
        assert f"  {stage:<16}{_duration(stages[stage]):>10}" in out
    assert "warning" not in out and "unknown" not in out  # a 7B with LoRA fits one 80 GB card
