"""The paper's tokenizers, built locally from files that registry packages ship (no model hub).

| name | the tokenizer of | source: a pinned package file, and the one asset taken from it |
|---|---|---|
| ``gpt2`` | gpt2, gpt2-large, gpt2-xl | openai-whisper 20250625 (sdist): ``whisper/assets/gpt2.tiktoken``, GPT-2's BPE ranks |
| ``llama2`` | Llama-2, Tulu 2 | llama-cpp-python 0.3.36 (sdist): llama.cpp's ``ggml-vocab-llama-spm.gguf`` |
| ``mistral`` | Mistral-7B-Instruct-v0.2, Mixtral-8x7B-Instruct-v0.1 | mistral-common 1.13.1 (wheel): ``tokenizer.model.v1`` |

``fetch`` downloads each package file once (the exact file that the index lists, or ``pip download
--no-deps`` of it), checks its sha256, extracts the asset (checked too) with llama.cpp's reference
tokenisations where it ships them, and builds a tokenizer folder that ``AutoTokenizer.from_pretrained`` opens offline, with its special
tokens and chat template. The Llama-2 vocabulary is read from GGUF and given SentencePiece's own
handling of spaces (a "▁" before the text, as the original tokenizer and llama.cpp do), so that it
tokenises exactly as llama.cpp's reference files say. ``tokenizer_path`` gives a built folder, or an
error that names what is missing or corrupt and how to build it.

Everything lives under ``$VALUEGUIDE_CACHE``, by default ``<python prefix>/share/valueguide`` (the
virtual environment's own folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import ArtifactError, atomic_dir

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA_CPP_MODELS = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/"
# Chat formats: Tulu 2's (<|user|> / <|assistant|> turns) and Mistral's ([INST] ... [/INST]), after BOS.
TULU_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
                 "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}{{ eos_token }}\n{% endif %}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


@dataclass(frozen=True)
class Source:
    """A package file on the registry, its sha256, and the members taken from it (path -> sha256)."""

    requirement: str
    file: str
    sha256: str
    members: dict = field(default_factory=dict)
    binary: bool = False  # a wheel (else the source distribution)


WHISPER = Source("openai-whisper==20250625", "openai_whisper-20250625.tar.gz",
                 "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
                 {"openai_whisper-20250625/whisper/assets/gpt2.tiktoken":
                  "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"})
LLAMA_CPP = Source("llama-cpp-python==0.3.36", "llama_cpp_python-0.3.36.tar.gz",
                   "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
                   {LLAMA_CPP_MODELS + "ggml-vocab-llama-spm.gguf":
                    "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
                    LLAMA_CPP_MODELS + "ggml-vocab-llama-spm.gguf.inp":
                    "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                    LLAMA_CPP_MODELS + "ggml-vocab-llama-spm.gguf.out":
                    "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29",
                    LLAMA_CPP_MODELS + "ggml-vocab-gpt-2.gguf.inp":
                    "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0",
                    LLAMA_CPP_MODELS + "ggml-vocab-gpt-2.gguf.out":
                    "48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60"})
MISTRAL_COMMON = Source("mistral-common==1.13.1", "mistral_common-1.13.1-py3-none-any.whl",
                        "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af",
                        {"mistral_common/data/tokenizer.model.v1":
                         "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"}, binary=True)
SOURCES = (WHISPER, LLAMA_CPP, MISTRAL_COMMON)
NAMES = ("gpt2", "llama2", "mistral")
CHAT_VOCABULARIES = ("llama2", "mistral")  # built with a chat template (Tulu's, Mistral's)


class VocabularyError(ArtifactError):
    """A tokenizer of the paper is not built, or a file of it is missing or corrupt."""


def cache_root() -> Path:
    return Path(os.environ.get("VALUEGUIDE_CACHE") or Path(sys.prefix) / "share" / "valueguide")


def asset_path(member: str) -> Path:
    """Where an extracted asset lives (the member's file name, under ``assets/``)."""
    return cache_root() / "assets" / Path(member).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _index_url() -> str:
    """The package index pip would ask first: ``PIP_INDEX_URL``, else PyPI's."""
    return (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")


def _fetch_listed(source: Source, dest: Path) -> None:
    """The file's address from the index's JSON listing of the project (PEP 691), then the file: about a
    second for all three, where ``pip download`` of a source distribution prepares its metadata first (20 s)."""
    project = source.requirement.split("==")[0]
    listing = f"{_index_url()}/{project}/"
    request = urllib.request.Request(listing, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    url = next(f["url"] for f in files if f["filename"] == source.file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(urllib.parse.urljoin(listing, url), timeout=300) as response, \
            open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def _pip_download(source: Source, into: Path) -> subprocess.Popen:
    """``pip download --no-deps`` of the pinned file, for an index that lists no JSON (pip's own settings)."""
    kind = ["--only-binary", ":all:"] if source.binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind, "--dest", str(into),
           source.requirement]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _try_listed(source: Source, dest: Path) -> bool:
    try:
        _fetch_listed(source, dest)
        return True
    except (OSError, ValueError, KeyError, StopIteration):  # URLError is an OSError; bad JSON a ValueError
        dest.unlink(missing_ok=True)
        return False


def _download(sources: list[Source], into: Path) -> list[Path]:
    """Each package file, its sha256 checked: read from the index's JSON listing, side by side, and by
    ``pip download`` where that fails (an index without JSON listings, a proxy only pip is set up for)."""
    with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
        listed = list(pool.map(lambda s: _try_listed(s, into / s.file / s.file), sources))
    by_pip = [(s, _pip_download(s, into / s.file)) for s, ok in zip(sources, listed) if not ok]
    failures = {s.file: p.communicate()[1] for s, p in by_pip if p.wait()}
    paths = []
    for source in sources:
        path = into / source.file / source.file
        if source.file in failures or not path.exists():
            raise VocabularyError(f"could not download {source.file} ({source.requirement}) from the package "
                                  f"registry: {failures.get(source.file, '').strip()[-500:] or 'no such file'}")
        if _sha256(path) != source.sha256:
            raise VocabularyError(f"{source.file} does not have the pinned sha256 {source.sha256}: refusing it")
        paths.append(path)
    return paths


def _extract(source: Source, archive: Path) -> None:
    opened = zipfile.ZipFile(archive) if source.binary else tarfile.open(archive)
    with opened:
        for member, sha in source.members.items():
            data = opened.read(member) if source.binary else opened.extractfile(member).read()
            if hashlib.sha256(data).hexdigest() != sha:
                raise VocabularyError(f"{member} in {source.file} does not have the pinned sha256 {sha}")
            target = asset_path(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)


def _assets_present(source: Source) -> bool:
    return all(asset_path(m).exists() and _sha256(asset_path(m)) == sha for m, sha in source.members.items())


def _legacy_spaces(tokenizer) -> None:
    """SentencePiece's own handling of spaces: "▁" for each space and one before the text."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Replace(" ", "▁"),
                                               normalizers.Replace(Regex(r"\A▁"), "▁▁")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)


def _build(name: str):
    """A transformers tokenizer for ``name`` from its assets."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if name == "gpt2":
        raw = TikTokenConverter(vocab_file=str(asset_path("gpt2.tiktoken")), pattern=GPT2_PATTERN).converted()
        eos = "<|endoftext|>"
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=eos, eos_token=eos, unk_token=eos)
    elif name == "llama2":
        gguf = asset_path("ggml-vocab-llama-spm.gguf")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _legacy_spaces(tok)
        tok.chat_template = TULU_TEMPLATE
    elif name == "mistral":
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(asset_path("tokenizer.model.v1"), Path(folder) / "tokenizer.model")
            tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = MISTRAL_TEMPLATE
    else:
        raise VocabularyError(f"unknown vocabulary {name!r}; the paper's are {NAMES}")
    tok.padding_side = "left"
    return tok


def _manifest(folder: Path) -> dict:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def fetch(force: bool = False, log=print) -> dict[str, Path]:
    """Download, check and build every tokenizer that is not built yet (``force``: all again)."""
    missing = [source for source in SOURCES if force or not _assets_present(source)]
    for source in missing:
        log(f"fetching {source.file} ({source.requirement}) ...")
    with tempfile.TemporaryDirectory() as scratch:
        for source, archive in zip(missing, _download(missing, Path(scratch))):
            _extract(source, archive)
    built = {}
    for name in NAMES:
        folder = cache_root() / "tokenizers" / name
        if force or not _intact(folder):
            with atomic_dir(folder) as tmp:
                _build(name).save_pretrained(tmp)
                (tmp / "manifest.json").write_text(json.dumps(_manifest(tmp), indent=2) + "\n")
            log(f"built the {name} tokenizer in {folder}")
        built[name] = folder
    return built


def _intact(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return False
    return json.loads(manifest.read_text()) == _manifest(folder)


def tokenizer_path(name: str) -> Path:
    """The built tokenizer folder of ``name``; a clear error if it is missing or was altered."""
    if name not in NAMES:
        raise VocabularyError(f"unknown vocabulary {name!r}; the paper's are {NAMES}")
    folder = cache_root() / "tokenizers" / name
    if not (folder / "manifest.json").exists():
        raise VocabularyError(f"the {name} tokenizer is not built at {folder}: run `valueguide fetch-tokenizers` "
                              "(make env does it once; it needs the package registry)")
    expected = json.loads((folder / "manifest.json").read_text())
    for file, sha in expected.items():
        if not (folder / file).exists():
            raise VocabularyError(f"{folder / file} is missing: rebuild with `valueguide fetch-tokenizers --force`")
        if _sha256(folder / file) != sha:
            raise VocabularyError(f"{folder / file} is corrupt (its sha256 is not the one built): rebuild with "
                                  "`valueguide fetch-tokenizers --force`")
    return folder


def load(name: str):
    """The tokenizer of ``name``, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_path(name)))


def reference_cases(stem: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference tokenisations for a vocabulary (``ggml-vocab-llama-spm.gguf`` or
    ``ggml-vocab-gpt-2.gguf``): (text, ids) pairs."""
    inp, out = asset_path(stem + ".inp"), asset_path(stem + ".out")
    for path in (inp, out):
        if not path.exists():
            raise VocabularyError(f"{path} is missing: run `valueguide fetch-tokenizers`")
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = out.read_text(encoding="utf-8").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]
