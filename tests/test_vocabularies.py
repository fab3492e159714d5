"""The paper's tokenizers, built from registry packages, tokenise as their references say."""

import shutil

import pytest

from valueguide import vocabularies
from valueguide.templates import render_for
from valueguide.vocabularies import VocabularyError, asset_path, load, reference_cases, tokenizer_path

MULTI_BYTE = ["naïve café €5", "日本語のテキスト", "emoji 😀🦙 and ß", "Ελληνικά", " leading space", "a\n\nb\tc  d"]


@pytest.mark.parametrize("name,stem", [("llama2", "ggml-vocab-llama-spm.gguf"), ("gpt2", "ggml-vocab-gpt-2.gguf")])
def test_tokenisations_equal_llama_cpps_reference_files(name, stem):
    tok = load(name)
    cases = reference_cases(stem)
    assert len(cases) > 40
    for text, ids in cases:
        assert tok(text, add_special_tokens=False).input_ids == ids, text


def test_gpt2_has_the_ids_of_the_model_card():
    tok = load("gpt2")
    assert len(tok) == 50257 and tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 50256
    assert tok("Hello world", add_special_tokens=False).input_ids == [15496, 995]


def test_mistral_equals_sentencepiece_and_its_instruct_tokens():
    import sentencepiece

    tok = load("mistral")
    assert len(tok) == 32000 and (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    assert tok("[INST]", add_special_tokens=False).input_ids == [733, 16289, 28793]
    reference = sentencepiece.SentencePieceProcessor(model_file=str(asset_path("tokenizer.model.v1")))
    for text, _ in reference_cases("ggml-vocab-llama-spm.gguf"):
        assert tok(text, add_special_tokens=False).input_ids == reference.encode(text), text


@pytest.mark.parametrize("name", vocabularies.NAMES)
def test_multi_byte_texts_round_trip(name):
    tok = load(name)
    for text in MULTI_BYTE:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_formats_are_tulus_and_mistrals():
    assert render_for(load("llama2"), "chat", "Hi") == "<s><|user|>\nHi\n<|assistant|>\n"
    assert render_for(load("mistral"), "chat", "Hi") == "<s>[INST] Hi [/INST]"
    mistral = load("mistral")
    assert mistral(render_for(mistral, "chat", "Hi"), add_special_tokens=False).input_ids[:4] == [1, 733, 16289, 28793]


def test_a_missing_or_corrupt_file_is_named(tmp_path, monkeypatch):
    built = vocabularies.cache_root() / "tokenizers"
    monkeypatch.setenv("VALUEGUIDE_CACHE", str(tmp_path))
    with pytest.raises(VocabularyError, match="the llama2 tokenizer is not built .* fetch-tokenizers"):
        tokenizer_path("llama2")
    shutil.copytree(built, tmp_path / "tokenizers")
    folder = tmp_path / "tokenizers" / "mistral"
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(VocabularyError, match=r"mistral/tokenizer.json is corrupt"):
        tokenizer_path("mistral")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(VocabularyError, match=r"mistral/tokenizer.json is missing"):
        tokenizer_path("mistral")
    with pytest.raises(VocabularyError, match="unknown vocabulary 'bert'"):
        tokenizer_path("bert")
