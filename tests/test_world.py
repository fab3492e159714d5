"""The tiny world: deterministic to the byte, and shaped as the pipeline expects."""

import hashlib
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from valueguide.world import build
from valueguide.world.corpus import make_reviews, text_score


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name == "world_stats.json"}


def test_two_builds_are_byte_identical(tiny_config, tmp_path):
    digests = []
    for run in ("a", "b"):
        world = tmp_path / run
        build.build_corpus(tiny_config, world)
        build.build_lm(tiny_config, world, "mixtral")
        build.build_reward(tiny_config, world)
        digests.append(_digest(world))
    assert digests[0] == digests[1]
    assert {"corpus.parquet", "models/mixtral/tokenizer.json", "models/mixtral/model.safetensors",
            "models/mixtral/pooled_vocabulary.json", "models/reward/model.safetensors"} <= set(digests[0])


def test_a_different_seed_gives_a_different_world(tiny_config, tmp_path):
    other = {**tiny_config, "seed": tiny_config["seed"] + 1}
    build.build_corpus(tiny_config, tmp_path / "a")
    build.build_corpus(other, tmp_path / "b")
    assert (tmp_path / "a/corpus.parquet").read_bytes() != (tmp_path / "b/corpus.parquet").read_bytes()


def _signed_intensity(sentence: str) -> float:
    """Polarity times the summed intensity of the sentiment words, read off the sentence by lookup."""
    from valueguide.world.corpus import WORDS, _intensities

    found = {"pos": 0.0, "neg": 0.0}
    hits = {"pos": 0, "neg": 0}
    for polarity, kinds in WORDS.items():
        for words in kinds.values():
            strengths = _intensities(len(words))
            for phrase, strength in zip(words, strengths):
                count = f" {sentence} ".count(f" {phrase} ")
                found[polarity] += count * strength
                hits[polarity] += count
    assert (hits["pos"] > 0) != (hits["neg"] > 0), sentence  # every sentence carries exactly one polarity
    return found["pos"] - found["neg"]


def test_review_scores_add_polarity_times_intensity_and_labels_are_their_sign():
    reviews = make_reviews(300, seed=3)
    assert 0.35 < sum(r.label for r in reviews) / len(reviews) < 0.65
    for review in reviews:
        sentences = [s for s in review.body.split(" .") if s.strip()]
        score = sum(_signed_intensity(s.strip()) for s in sentences)
        assert review.score == pytest.approx(score, abs=1e-6) == text_score(review.text), review.text
        assert review.score != 0 and (review.score > 0) == bool(review.label), review.text


def test_rarer_words_are_stronger():
    from valueguide.world.corpus import _intensities, _word_weights

    for n in (4, 5, 14):
        weights, strengths = _word_weights(n), _intensities(n)
        assert weights.sum() == pytest.approx(1.0)
        assert (weights[1:] < weights[:-1]).all() and (strengths[1:] > strengths[:-1]).all()
    reviews = make_reviews(2000, seed=4)
    text = " ".join(r.text for r in reviews)
    assert text.count(" fun ") > 5 * text.count(" superb ") > 0  # the commonest and the rarest adjective


def test_world_models_load_with_auto_classes_on_the_real_vocabulary(tiny_world):
    folder = tiny_world / "models" / "gpt2-small"
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|endoftext|>" and tok("Hello world").input_ids == [15496, 995]
    lm = AutoModelForCausalLM.from_pretrained(folder)
    assert lm.config.vocab_size == len(tok) == 50257
    assert lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_world / "models" / "reward")
    assert clf.config.num_labels == 1 and clf.config.problem_type == "regression"


def test_unknown_world_model_is_named(tiny_config, tiny_world):
    with pytest.raises(KeyError, match="no model 'gpt5'"):
        build.build_lm(tiny_config, tiny_world, "gpt5")
