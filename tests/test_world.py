"""The tiny world: deterministic to the byte, and shaped as the pipeline expects."""

import hashlib
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from valueguide.world import build
from valueguide.world.corpus import make_reviews


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


def _polarity(sentence: str) -> int:
    from valueguide.world.corpus import WORDS

    def hits(kind):
        return sum(f" {phrase} " in f" {sentence} " for words in WORDS[kind].values() for phrase in words)

    pos, neg = hits("pos"), hits("neg")
    assert (pos > 0) != (neg > 0), sentence  # every sentence carries exactly one polarity
    return 1 if pos else -1


def test_review_labels_are_the_majority_polarity_of_sentences():
    reviews = make_reviews(300, seed=3)
    assert 0.35 < sum(r.label for r in reviews) / len(reviews) < 0.65
    for review in reviews:
        sentences = [s for s in review.body.split(" .") if s.strip()]
        balance = sum(_polarity(s.strip()) for s in sentences)
        assert balance != 0 and (balance > 0) == bool(review.label), review.text


def test_world_models_load_with_auto_classes_on_the_real_vocabulary(tiny_world):
    folder = tiny_world / "models" / "gpt2-small"
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|endoftext|>" and tok("Hello world").input_ids == [15496, 995]
    lm = AutoModelForCausalLM.from_pretrained(folder)
    assert lm.config.vocab_size == len(tok) == 50257
    assert lm.get_output_embeddings().weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_world / "models" / "reward")
    assert clf.config.num_labels == 2 and clf.config.id2label[1] == "POSITIVE"


def test_unknown_world_model_is_named(tiny_config, tiny_world):
    with pytest.raises(KeyError, match="no model 'gpt5'"):
        build.build_lm(tiny_config, tiny_world, "gpt5")
