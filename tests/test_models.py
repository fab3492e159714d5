"""The model loader: one entry point, clear errors for what cannot be loaded."""

import pytest
import torch

from valueguide.models import (
    LoadOptions,
    ModelNotFoundError,
    load_causal_lm,
    load_tokenizer,
    resolve_spec,
    same_vocabulary,
    torch_dtype,
)


def test_world_spec_resolves_to_the_world_folder(tiny_world):
    assert resolve_spec("world:gpt2-small", tiny_world) == str(tiny_world / "models" / "gpt2-small")
    model = load_causal_lm("world:gpt2-small", tiny_world)
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_missing_world_model_names_the_model_and_the_fix(tiny_world):
    with pytest.raises(ModelNotFoundError, match=r"world:gpt2-xl.*build the world"):
        load_causal_lm("world:gpt2-xl", tiny_world)


def test_missing_local_folder_is_reported(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_causal_lm(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_causal_lm(str(tmp_path / "empty"))


def test_uncached_hub_model_offline_names_the_model(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read once, when huggingface_hub is imported: without this the lookup waits on the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match=r"valueguide-test/no-such-model.*could not be fetched"):
        load_tokenizer("valueguide-test/no-such-model")


def test_dtype_defaults_follow_the_device():
    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda:0") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        torch_dtype("float8", "cpu")


def test_load_options_set_dtype(tiny_world):
    model = load_causal_lm("world:gpt2-small", tiny_world, LoadOptions(dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_same_vocabulary(tiny_world):
    from tests.helpers.toy_models import make_tokenizer

    world_tok = load_tokenizer("world:gpt2-small", tiny_world)
    assert same_vocabulary(world_tok, load_tokenizer("world:reward", tiny_world))
    assert not same_vocabulary(world_tok, make_tokenizer())
