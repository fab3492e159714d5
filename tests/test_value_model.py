"""The value model: head shapes, padding and cache invariance, response_values, persistence, LoRA."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.toy_models import make_gpt2, make_mistral, make_tokenizer
from valueguide.artifacts import ArtifactError
from valueguide.models import load_tokenizer
from valueguide.specs import ModelNotFoundError
from valueguide.value.model import CONFIG_FILE, HEAD_FILE, ValueModel, left_pad, response_values

TOK = make_tokenizer()
BACKBONES = {"gpt2": lambda: make_gpt2(len(TOK), n_layer=2).transformer,
             "mistral": lambda: make_mistral(len(TOK), layers=2).model}



def random_value_model(backbone: str = "gpt2", head: str = "token", seed: int = 0) -> ValueModel:
    model = ValueModel(BACKBONES[backbone](), head, {"template": "{prompt}"}).eval()
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.head.weight)
    torch.nn.init.normal_(model.head.bias)
    return model


def ids(*words: str) -> list[int]:
    return TOK.convert_tokens_to_ids(list(words))


ROWS = [ids("the", "film", "good", "a", "b"), ids("bad", "film"), ids("the", "good", "<eos>")]


@pytest.mark.parametrize("head,shape", [("token", (3, 5, len(TOK))), ("scalar", (3, 5))])
def test_heads_start_at_zero(head, shape):
    model = ValueModel(BACKBONES["gpt2"](), head)
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    values = model(input_ids, mask).values
    assert values.shape == shape
    assert not values.any()
    assert model.meta["head"] == head and model.meta["vocab_size"] == len(TOK)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown value head 'linear'"):
        ValueModel(BACKBONES["gpt2"](), "linear")


@pytest.mark.parametrize("backbone", ["gpt2", "mistral"])
@pytest.mark.parametrize("head", ["token", "scalar"])
def test_left_padding_scores_like_the_unpadded_row(backbone, head):
    model = random_value_model(backbone, head)
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    padded = model(input_ids, mask).values
    for row, seq in enumerate(ROWS):
        alone = model(torch.tensor([seq])).values[0]
        torch.testing.assert_close(padded[row, -len(seq):], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["gpt2", "mistral"])
@pytest.mark.parametrize("head", ["token", "scalar"])
def test_incremental_feeding_with_cache_matches_a_full_pass(backbone, head):
    model = random_value_model(backbone, head)
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    full = model(input_ids, mask).values
    out = model(input_ids[:, :3], mask[:, :3], use_cache=True)
    pieces = [out.values]
    for t in range(3, input_ids.shape[1]):
        out = model(input_ids[:, t:t + 1], mask[:, :t + 1], past_key_values=out.past_key_values, use_cache=True)
        pieces.append(out.values)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["gpt2", "mistral"])
@pytest.mark.parametrize("head", ["token", "scalar"])
def test_taken_values_are_the_full_outputs_read_at_the_tokens_taken(backbone, head):
    """Fitting reads only the head rows of the tokens taken: the same numbers as the full output."""
    model = random_value_model(backbone, head)
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    response = mask.bool() & (torch.arange(input_ids.shape[1]) > 0)[None, :]
    want = response_values(model(input_ids, mask).values, input_ids, response)
    torch.testing.assert_close(model.taken(input_ids, mask) * response, want, atol=1e-5, rtol=1e-5)


def test_response_values_follow_their_definitions():
    input_ids = torch.tensor([ids("the", "good", "a", "<eos>")])
    response_mask = torch.tensor([[False, True, True, True]])
    # token head: values[0, t, a] = 10·t + a, so Q(s, y_t) is read at the position before y_t
    token_values = (10 * torch.arange(4.0)[:, None] + torch.arange(float(len(TOK)))[None, :])[None]
    good, a, eos = ids("good", "a", "<eos>")
    expected = torch.tensor([[0.0, 0 + good, 10 + a, 20 + eos]])
    torch.testing.assert_close(response_values(token_values, input_ids, response_mask), expected)
    # scalar head: V(s_{t+1}) is read at the position of y_t
    scalar_values = torch.tensor([[5.0, 6.0, 7.0, 8.0]])
    torch.testing.assert_close(response_values(scalar_values, input_ids, response_mask),
                               torch.tensor([[0.0, 6.0, 7.0, 8.0]]))
    with pytest.raises(ValueError, match="position 0"):
        response_values(token_values, input_ids, torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("head", ["token", "scalar"])
def test_save_load_round_trip_gives_identical_values(tmp_path, head):
    model = random_value_model("gpt2", head)
    with torch.no_grad():
        model.backbone.h[0].mlp.c_fc.weight.add_(1.0)  # not the initial backbone
    model.save_pretrained(tmp_path / "value", tokenizer=TOK)
    loaded = ValueModel.from_pretrained(tmp_path / "value")
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    assert torch.equal(loaded(input_ids, mask).values, model(input_ids, mask).values)
    assert loaded.meta == model.meta and loaded.meta["template"] == "{prompt}"
    assert load_tokenizer(str(tmp_path / "value")).get_vocab() == TOK.get_vocab()
    assert not [p for p in tmp_path.iterdir() if p.name != "value"]  # no temporary folder left


@pytest.mark.parametrize("damage,file", [("truncate", "model.safetensors"), ("truncate", HEAD_FILE),
                                         ("delete", HEAD_FILE), ("delete", CONFIG_FILE)])
def test_damaged_folder_gives_an_error_naming_the_file(tmp_path, damage, file):
    random_value_model().save_pretrained(tmp_path)
    path = tmp_path / file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    with pytest.raises(ArtifactError, match=file):
        ValueModel.from_pretrained(tmp_path)


@pytest.fixture
def lm_folder(tmp_path):
    lm = make_gpt2(len(TOK), n_layer=2)
    lm.save_pretrained(tmp_path / "lm")
    TOK.save_pretrained(tmp_path / "lm")
    return lm, str(tmp_path / "lm")


def test_from_backbone_takes_the_body_of_a_causal_lm(lm_folder):
    lm, spec = lm_folder
    model = ValueModel.from_backbone(spec, "scalar", meta={"template": "Q: {prompt}"})
    assert torch.equal(model.backbone.wte.weight, lm.transformer.wte.weight)
    assert model.meta["backbone"] == spec and model.meta["template"] == "Q: {prompt}"
    with pytest.raises(ModelNotFoundError):
        ValueModel.from_backbone("./no/such/model", "token")


def test_lora_trains_adapters_and_head_and_merges_on_save(lm_folder, tmp_path):
    _, spec = lm_folder
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"]}
    model = ValueModel.from_backbone(spec, "token", lora=lora).eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or name.startswith("head."):
                param.normal_()
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    before = model(input_ids, mask).values
    model.save_pretrained(tmp_path / "value")
    loaded = ValueModel.from_pretrained(tmp_path / "value")
    assert type(loaded.backbone).__name__ == "GPT2Model" and loaded.meta["lora"] == lora
    torch.testing.assert_close(loaded(input_ids, mask).values, before, atol=1e-5, rtol=1e-5)


def test_rescale_folds_an_affine_map_into_the_head():
    model = random_value_model("gpt2", "scalar")
    input_ids, mask = left_pad(ROWS, TOK.pad_token_id)
    before = model(input_ids, mask).values
    model.rescale(2.0, 3.0)
    torch.testing.assert_close(model(input_ids, mask).values, 2.0 * before + 3.0)


def test_a_response_prefix_that_reads_as_no_value_token_is_told_apart():
    """Across vocabularies a cut may end on Llama-2's lone "▁", which is no text at all; the diagnostics
    leave such cuts out instead of failing (value_examples refuses them)."""
    from valueguide import vocabularies
    from valueguide.value.model import readable_examples, value_examples

    llama, gpt2 = vocabularies.load("llama2"), vocabularies.load("gpt2")
    space, word = llama.convert_tokens_to_ids(["▁", "▁good"])
    prefixes = [[space], [space, word], [word]]
    kept, examples = readable_examples(["a prompt"] * 3, prefixes, gpt2, "{prompt}", llama)
    assert kept == [1, 2]
    assert examples == value_examples(["a prompt"] * 2, prefixes[1:], [0.0, 0.0], gpt2, "{prompt}", llama)
    kept, _ = readable_examples(["a prompt"], [[space]], llama, "{prompt}", llama)  # one vocabulary: ids as they are
    assert kept == [0]
    with pytest.raises(ValueError, match="no token to value"):
        value_examples(["a prompt"], [[space]], [0.0], gpt2, "{prompt}", llama)
