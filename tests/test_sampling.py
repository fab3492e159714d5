"""Stage sample: shapes, stop strings, stored log-probs, rewards and determinism."""

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers.toy_models import make_gpt2, make_tokenizer
from valueguide.artifacts import ArtifactError, write_parquet
from valueguide.models import load_causal_lm, load_tokenizer
from valueguide.prompts import run_prompts
from valueguide.reward import RewardModel
from valueguide.sampling import SamplingParams, cut_response, run_sample, sample_batch


def test_cut_response_stops_after_eos_and_stop_strings():
    tok = make_tokenizer()
    ids = tok("a good film b").input_ids
    lps = [-0.1, -0.2, -0.3, -0.4]
    assert cut_response(ids, lps, tok, tok.eos_token_id, []).finished is False
    cut = cut_response(ids, lps, tok, tok.eos_token_id, ["film"])
    assert cut.ids == ids[:3] and cut.logprobs == lps[:3] and cut.finished
    with_eos = ids[:2] + [tok.eos_token_id] + ids[2:]
    cut = cut_response(with_eos, lps + [-0.5], tok, tok.eos_token_id, ["film"])
    assert cut.ids == with_eos[:3] and cut.finished


def _recomputed_logprobs(model, tok, prompt: str, response_ids: list[int], params: SamplingParams) -> np.ndarray:
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1] / params.temperature
    if params.top_k:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    logp = torch.log_softmax(logits, -1)
    return logp.gather(1, torch.tensor(response_ids)[:, None])[:, 0].numpy()


@pytest.mark.parametrize("params,padding_side", [(SamplingParams(temperature=1.0, max_new_tokens=6), "left"),
                                                 (SamplingParams(temperature=0.7, top_k=3, max_new_tokens=6), "left"),
                                                 (SamplingParams(temperature=1.0, max_new_tokens=6), "right")])
def test_stored_logprobs_equal_a_forward_pass(params, padding_side):
    """Also with a tokenizer that pads on the right by default, as GPT-2's and Llama-2's do."""
    tok = make_tokenizer()
    tok.padding_side = padding_side
    model = make_gpt2(len(tok), seed=1)
    prompts = ["the film", "a b c good", "bad"]
    responses = sample_batch(model, tok, prompts, params, seed=5)
    assert len(responses) == 3
    for prompt, resp in zip(prompts, responses):
        assert 1 <= len(resp.ids) <= params.max_new_tokens
        assert resp.finished == (resp.ids[-1] == tok.eos_token_id)
        expected = _recomputed_logprobs(model, tok, prompt, resp.ids, params)
        np.testing.assert_allclose(resp.logprobs, expected, atol=1e-4)


def test_same_seed_same_samples_other_seed_other_samples():
    tok = make_tokenizer()
    model = make_gpt2(len(tok), seed=1)
    params = SamplingParams(max_new_tokens=8)
    a = sample_batch(model, tok, ["the film"] * 4, params, seed=1)
    b = sample_batch(model, tok, ["the film"] * 4, params, seed=1)
    c = sample_batch(model, tok, ["the film"] * 4, params, seed=2)
    assert [r.ids for r in a] == [r.ids for r in b] != [r.ids for r in c]


def test_run_sample_writes_scored_samples(tiny_config, tiny_world, tmp_path):
    prompts = tmp_path / "prompts.parquet"
    run_prompts(tiny_config, "train", prompts)
    out = tmp_path / "samples.parquet"
    df = run_sample(tiny_config, prompts, out, tiny_world)
    n_prompts, n = tiny_config["prompts"]["n_train"], tiny_config["sample"]["n"]
    assert len(df) == n_prompts * n
    assert set(df.columns) >= {"prompt_id", "prompt", "sample_idx", "response", "response_ids",
                               "finished", "reward", "logprobs"}
    assert (df.groupby("prompt_id").sample_idx.nunique() == n).all()
    assert (df.response_ids.map(len) == df.logprobs.map(len)).all()
    assert df.response_ids.map(len).max() <= tiny_config["sample"]["max_new_tokens"]
    reward = RewardModel.load("world:reward", tiny_world)
    np.testing.assert_allclose(df.reward, reward.score((df.prompt + df.response).tolist()), atol=1e-5)
    tok = load_tokenizer("world:gpt2-small", tiny_world)
    assert df.response.tolist() == [tok.decode(ids, skip_special_tokens=True) for ids in df.response_ids]
    again = tmp_path / "again.parquet"
    run_sample(tiny_config, prompts, again, tiny_world)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(again))


def test_empty_or_truncated_prompt_file_is_a_clear_error(tiny_config, tiny_world, tmp_path):
    empty = tmp_path / "empty.parquet"
    write_parquet(pd.DataFrame({"prompt_id": [], "prompt": []}), empty)
    with pytest.raises(ValueError, match="holds no prompts"):
        run_sample(tiny_config, empty, tmp_path / "out.parquet", tiny_world)
    truncated = tmp_path / "truncated.parquet"
    run_prompts(tiny_config, "test", truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ArtifactError, match="truncated"):
        run_sample(tiny_config, truncated, tmp_path / "out.parquet", tiny_world)
    assert not (tmp_path / "out.parquet").exists()


def test_reward_is_the_one_logit_or_the_logit_gap_and_independent_of_batching(tiny_world, tmp_path):
    from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

    texts = ["i watched this film and it was great .", "awful", "the plot was dull and the cast was weak ."]
    batched = RewardModel.load("world:reward", tiny_world, batch_size=3).score(texts)
    single = RewardModel.load("world:reward", tiny_world, batch_size=1).score(texts)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    tok = load_tokenizer("world:reward", tiny_world)
    regressor = AutoModelForSequenceClassification.from_pretrained(tiny_world / "models" / "reward")
    with torch.no_grad():
        logits = regressor(**tok(texts[2:], return_tensors="pt")).logits[0]
    assert logits.shape == (1,) and batched[2] == pytest.approx(float(logits[0]), abs=1e-5)

    torch.manual_seed(0)  # a two-label classifier (the paper's IMDB evaluator's shape): logit(pos) - logit(neg)
    classifier = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok),
                                                           num_labels=2, pad_token_id=tok.eos_token_id)).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    tok.save_pretrained(tmp_path / "classifier")
    scores = RewardModel.load(str(tmp_path / "classifier"), batch_size=2).score(texts)
    with torch.no_grad():
        logits = classifier(**tok(texts[2:], return_tensors="pt")).logits[0]
    assert scores[2] == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)