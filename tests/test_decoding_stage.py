"""Stage generate on a tiny world written to disk, and the one-call Python API."""

import json
import math

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from tests.helpers.toy_models import TOY_WORDS, make_gpt2, make_tokenizer
from valueguide.decoding import VocabularyMismatch, guide
from valueguide.generate import run_generate
from valueguide.value.model import ValueModel

TOK = make_tokenizer()
V = len(TOK)
COLUMNS = ["prompt_id", "prompt", "output", "output_ids", "n_tokens", "forward_passes", "tokens_encoded",
           "candidate_tokens", "wall_time", "kl"]
CBS = {"W": 2, "K": 2, "L": 3, "beta": 1.0}
METHODS = {
    "base": {},
    "eft": {"token": {"kind": "implicit", "w": 1.0}},
    "vas": {"token": {"kind": "explicit", "beta": 1.0, "top_k": 4, "mask_outside_topk": False}},
    "ivg": {"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", **CBS}},
    "cbs_implicit": {"chunk": {"scorer": "implicit", **CBS}},
    "bon_gold": {"chunk": {"scorer": "gold", "W": 1, "K": 4, "L": None}},
    "fudge": {"token": {"kind": "fudge", "beta": 1.0, "top_k": 4}},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    models = root / "models"
    for name, seed, tok in [("small", 1, TOK), ("large", 2, TOK), ("other", 3, make_tokenizer(TOY_WORDS[::-1]))]:
        make_gpt2(V, seed=seed).save_pretrained(models / name)
        tok.save_pretrained(models / name)
    torch.manual_seed(4)
    reward = GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                                      num_labels=2, pad_token_id=0)).eval()
    reward.save_pretrained(models / "reward")
    TOK.save_pretrained(models / "reward")
    make_gpt2(V, seed=5).save_pretrained(root / "tuned")  # saved without a tokenizer, as a bare fit may be
    value = ValueModel(make_gpt2(V, seed=6).transformer, "token", {"template": "a {prompt}",
                                                                   "tokenizer": "world:small"})
    torch.nn.init.normal_(value.head.weight)
    value.save_pretrained(root / "value", tokenizer=TOK)
    classifier = ValueModel(make_gpt2(V, seed=7).transformer, "token", {"template": "{prompt}", "tokenizer": "world:small"})
    torch.nn.init.normal_(classifier.head.weight)
    classifier.save_pretrained(root / "classifier", tokenizer=TOK)
    pd.DataFrame({"prompt_id": [3, 5, 8], "prompt": ["good film", "the bad", "h a"]}).to_parquet(root / "prompts.parquet")
    return root


def config(**generate) -> dict:
    return {
        "seed": 1, "results_dir": "unused", "device": "cpu", "dtype": "auto",
        "models": {"small": {"path": "world:small", "template": "{prompt}"},
                   "large": {"path": "world:large", "template": "the film {prompt}"},
                   "other": {"path": "world:other", "template": "{prompt}"}},
        "reward_model": "world:reward",
        "fit_implicit": {"mode": "train", "untuned": "small", "tuned": None},
        "fit_value": {"backbone": "world:small", "template": "{prompt}"},
        "fit_classifier": {"backbone": "world:small", "template": "{prompt}"},
        "generate": {"temperature": 0.7, "top_k": 0, "top_p": 1.0, "max_new_tokens": 8, "stop": [],
                     "batch_size": 2, "methods": METHODS, **generate},
    }


def run(world, method, model="large", out=None, **paths):
    out = out or world / "generations" / model / f"{method}.parquet"
    paths = {"value_path": world / "value", "tuned_path": world / "tuned", "classifier_path": world / "classifier",
             **paths}
    written = run_generate(config(), model, method, [(world / "prompts.parquet", out)], world_dir=world, **paths)
    return written[str(out)], out


@pytest.mark.parametrize("method", list(METHODS))
def test_run_generate_writes_the_contract_columns_with_costs(world, method):
    df, out = run(world, method)
    back = pd.read_parquet(out)
    assert list(back.columns) == COLUMNS
    assert back.prompt_id.tolist() == [3, 5, 8]
    for row in back.itertuples():
        assert row.n_tokens == len(row.output_ids) >= 1
        assert row.output == TOK.decode(list(row.output_ids), skip_special_tokens=True)
        assert row.wall_time > 0
    passes = json.loads(back.forward_passes[0])
    expected = {"base": {"guided"}, "eft": {"guided", "tuned", "untuned"}, "vas": {"guided", "value"},
                "ivg": {"guided", "tuned", "untuned", "value"}, "cbs_implicit": {"guided", "tuned", "untuned"},
                "bon_gold": {"guided", "reward"}, "fudge": {"guided", "classifier"}}[method]
    assert set(passes) == expected and all(v > 0 for v in passes.values())
    assert set(json.loads(back.tokens_encoded[0])) == expected
    assert json.loads(back.candidate_tokens[0]) == {}  # a token head scores candidates from one output
    assert back.kl.dtype == "float64"  # nats from the guided model's own distribution, summed per response
    if method == "base":  # sampled from the guided model itself: 0 token by token
        assert (back.kl == 0).all()
    elif method in ("eft", "vas", "fudge"):  # token-level guidance: its exact KL
        assert (back.kl > 0).all() and back.kl.map(math.isfinite).all()
    else:  # chunk-level search: the sum along the returned row is not the method's KL, and is not measured
        assert back.kl.isna().all()
    again, _ = run(world, method, out=world / "again.parquet")
    assert again.output_ids.map(list).tolist() == df.output_ids.map(list).tolist()


def test_run_generate_refuses_a_method_it_cannot_run_before_writing(world):
    out = world / "generations" / "other" / "eft.parquet"
    with pytest.raises(ValueError, match="across vocabularies .* top_k"):  # EFT on text needs candidates
        run(world, "eft", model="other", out=out)
    assert not out.exists()


def test_run_generate_refuses_fudge_across_vocabularies_before_writing(world):
    out = world / "generations" / "other" / "fudge.parquet"
    with pytest.raises(VocabularyMismatch, match=r"FUDGE's classifier \(.*classifier.*\) reads another vocabulary "
                                                 r"than the guided model \(.*other.*\)"):
        run(world, "fudge", model="other", out=out)
    assert not out.exists()


def test_run_generate_says_which_artifact_a_method_needs(world):
    with pytest.raises(ValueError, match="value_path"):
        run(world, "ivg", value_path=None)
    with pytest.raises(ValueError, match="tuned_path"):
        run(world, "eft", tuned_path=None)
    with pytest.raises(ValueError, match="FUDGE's classifier: pass classifier_path"):
        run(world, "fudge", classifier_path=None)
    with pytest.raises(ValueError, match="unknown method"):
        run(world, "nope")


def test_guide_generates_one_text_per_prompt_reproducibly():
    large, small, tuned = make_gpt2(V, seed=2), make_gpt2(V, seed=1), make_gpt2(V, seed=5)
    value = ValueModel(make_gpt2(V, seed=6).transformer, "token", {"template": "{prompt}"})
    ivg = {"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", "W": 2, "K": 2, "L": 3}}
    prompts = ["good film", "the bad", "h"]
    texts = guide(large, TOK, prompts, method=ivg, value_model=value, tuned=tuned, untuned=small,
                  max_new_tokens=6, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert texts == guide(large, TOK, prompts, method=ivg, value_model=value, tuned=tuned, untuned=small,
                          max_new_tokens=6, batch_size=2)
    with pytest.raises(ValueError, match="needs models"):
        guide(large, TOK, prompts, method=ivg)


def test_guide_reads_a_value_model_with_the_tokenizer_saved_with_it(tmp_path):
    """The issue's case: a Mistral-vocabulary model guided by a GPT-2-vocabulary value, without
    ``value_tokenizer``. A value model that knows no tokenizer of its own would read Mistral's ids
    through GPT-2's embedding: refused. Loaded from its folder, it reads the text in its own tokens."""
    from valueguide import vocabularies
    from valueguide.decoding import VocabularyMismatch

    mistral, gpt2 = vocabularies.load("mistral"), vocabularies.load("gpt2")
    large = make_gpt2(len(mistral), seed=2)
    value = ValueModel(make_gpt2(len(gpt2), seed=6).transformer, "scalar", {"template": "{prompt}\n"})
    torch.nn.init.normal_(value.head.weight)
    best_of_2 = {"chunk": {"scorer": "explicit", "W": 1, "K": 2, "L": None}}
    prompts = ["Write one sentence about rain.", "café €5"]
    with pytest.raises(VocabularyMismatch, match="the value model .*50257 embedding rows for a tokenizer of 32000"):
        guide(large, mistral, prompts, method=best_of_2, value_model=value, max_new_tokens=4)
    value.save_pretrained(tmp_path / "value", tokenizer=gpt2)
    loaded = ValueModel.from_pretrained(tmp_path / "value")
    texts = guide(large, mistral, prompts, method=best_of_2, value_model=loaded, max_new_tokens=4)
    assert texts == guide(large, mistral, prompts, method=best_of_2, value_model=loaded, value_tokenizer=gpt2,
                          max_new_tokens=4)


def test_a_tokenizer_that_does_not_fit_its_model_is_refused_by_role(world):
    """Ids past a model's embedding, or a model saved with another vocabulary of the same size (the
    authors' Mistral ids fed to Llama-2 models): refused before generating, naming the role."""
    from transformers import AutoTokenizer

    from tests.helpers.toy_tokenizers import byte_bpe
    from valueguide.decoding import VocabularyMismatch
    from valueguide.models import load_causal_lm

    large, small = make_gpt2(V, seed=2), load_causal_lm(str(world / "models" / "small"))
    other = AutoTokenizer.from_pretrained(str(world / "models" / "other"))
    assert len(other) == V and other.get_vocab() != TOK.get_vocab()
    eft = {"token": {"kind": "implicit", "w": 1.0, "top_k": 4}}
    with pytest.raises(VocabularyMismatch, match="the guided model .* ids from 14 on would index past"):
        guide(large, byte_bpe(), ["good film"], max_new_tokens=2)
    with pytest.raises(VocabularyMismatch, match="the untuned model .* was saved with a tokenizer"):
        guide(large, TOK, ["good film"], method=eft, tuned=make_gpt2(V, seed=5), untuned=small, small_tokenizer=other,
              max_new_tokens=2)
    # guiding a model of the other vocabulary, the pair reads the text in the tokenizer saved with it
    pair = {"method": eft, "tuned": make_gpt2(V, seed=5), "untuned": small, "max_new_tokens": 4}
    assert guide(large, other, ["good film"], **pair) == guide(large, other, ["good film"], small_tokenizer=TOK, **pair)


def test_each_batch_draws_from_its_own_seed_whatever_the_shard():
    """Batch b's generator is seeded derive_seed(seed, "generate", b), b counted over the whole split:
    batches differ from each other, and a shard starting at batch 1 draws what the whole run drew there."""
    from types import SimpleNamespace

    from valueguide.generate import _generate_all
    from valueguide.seeding import derive_seed

    seeds = []

    def generate(prompts, generator):
        seeds.append(generator.initial_seed())
        meter = SimpleNamespace(passes={}, tokens={}, candidates={})
        return SimpleNamespace(meter=meter, generations=[SimpleNamespace(text="t", ids=[1], kl=0.0) for _ in prompts])

    decoder = SimpleNamespace(generate=generate)
    prompts = pd.DataFrame({"prompt_id": range(5), "prompt": [f"p{i}" for i in range(5)]})
    _generate_all(decoder, prompts, 2, seed=3, desc="test")
    _generate_all(decoder, prompts.iloc[2:], 2, seed=3, desc="test", first_batch=1)
    expected = [derive_seed(3, "generate", b) for b in range(3)]
    assert seeds == expected + expected[1:] and len(set(expected)) == 3
