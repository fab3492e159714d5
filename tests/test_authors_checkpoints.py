"""The IVG authors' released checkpoints, in their key layouts, load and score as their classes do.

Each test saves a tiny random model the way the authors' classes save theirs (chadlzx/ivg @97a7cf7,
inference_time_alignment/modeling_gpt2.py and modeling_llama.py: a body under ``transformer.`` or
``model.`` and a bias-free vocabulary-sized ``score_head``), and compares our loaded model with a
forward written from their code: their chunk score ``end_scores`` and their token-level logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

from tests.helpers import toy_generation
from tests.helpers.toy_models import make_tokenizer
from valueguide.config import ConfigError, labelled_specs, load_config, validate_config
from valueguide.generate import run_generate
from valueguide.reward import RewardModel
from valueguide.specs import ModelNotFoundError
from valueguide.value.authors import load_authors_value
from valueguide.value.model import ValueModel, encode_prompt, left_pad

TOK = make_tokenizer()
V = len(TOK)


def gpt2_body():
    torch.manual_seed(1)
    return GPT2Model(GPT2Config(vocab_size=V, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                bos_token_id=1, eos_token_id=1, pad_token_id=0)).eval()


def llama_body():
    torch.manual_seed(2)
    return LlamaModel(LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                  bos_token_id=1, eos_token_id=1, pad_token_id=0)).eval()


def save_authors_layout(folder, body, prefix: str, architecture: str, shards: int = 1) -> torch.nn.Linear:
    """Write ``body`` and a random ``score_head`` as the authors' ``save_pretrained`` does; returns the head."""
    head = torch.nn.Linear(body.config.hidden_size, body.config.vocab_size, bias=False)
    torch.nn.init.normal_(head.weight)
    state = {f"{prefix}.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state["score_head.weight"] = head.weight.detach().clone()
    folder.mkdir(parents=True)
    body.config.architectures = [architecture]
    body.config.save_pretrained(folder)
    TOK.save_pretrained(folder)
    keys = sorted(state)
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return head
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return head


@torch.no_grad()
def authors_gpt2_end_scores(body, head, input_ids, attention_mask):
    """GPT2ModelForTokenScore.forward: scores shifted right by one (0 first), the taken token's
    entry, read at each row's last attended position."""
    scores = head(body(input_ids, attention_mask=attention_mask).last_hidden_state)
    zero = torch.zeros_like(scores[:, :1])
    taken = torch.cat([zero, scores[:, :-1]], 1).gather(-1, input_ids[..., None]).squeeze(-1)
    ends = [int(row.nonzero()[-1]) for row in attention_mask]
    return torch.stack([taken[i, e] for i, e in enumerate(ends)]), scores


@torch.no_grad()
def authors_llama_end_scores(body, head, input_ids, attention_mask):
    """LlamaModelForTokenScore.forward: logits[:-1] gathered at the next token, read at the last
    attended position minus one (``shift_index=-1``)."""
    logits = head(body(input_ids, attention_mask=attention_mask).last_hidden_state)
    taken = logits[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    ends = [int(row.nonzero()[-1]) for row in attention_mask]
    return torch.stack([taken[i, e - 1] for i, e in enumerate(ends)]), logits


TEXTS = [["the", "film", "good"], ["a", "bad", "film", "b", "c", "good"], ["the", "d"]]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_token_value_in_the_authors_layout_scores_as_their_class(tmp_path, arch):
    body = gpt2_body() if arch == "gpt2" else llama_body()
    prefix, name = ("transformer", "GPT2ModelForTokenScore") if arch == "gpt2" else ("model", "LlamaModelForTokenScore")
    head = save_authors_layout(tmp_path / "rm", body, prefix, name, shards=1 if arch == "gpt2" else 2)
    reference = authors_gpt2_end_scores if arch == "gpt2" else authors_llama_end_scores

    value = load_authors_value(str(tmp_path / "rm"), "{prompt}")
    assert value.head_kind == "token" and value.meta["template"] == "{prompt}"
    with torch.no_grad():  # a left-padded batch, read at its last position as our chunk scorers do
        ids, mask = left_pad([TOK.convert_tokens_to_ids(t) for t in TEXTS], TOK.pad_token_id)
        ours = value.taken(ids, mask)[:, -1]
    for row, words in enumerate(TEXTS):
        single = torch.tensor([TOK.convert_tokens_to_ids(words)])
        want, want_logits = reference(body, head, single, torch.ones_like(single))
        assert float(ours[row]) == pytest.approx(float(want[0]), abs=1e-4)  # their chunk score (cbs.py)
        with torch.no_grad():  # their token-level guidance (ivg.py): the score_head row at the last position
            got = value(single).values[0, -1]
        assert torch.allclose(got, want_logits[0, -1], atol=1e-4)


def test_the_alpaca_template_with_a_literal_bos_reads_as_their_scorer_with_special_tokens():
    """Their AlpacaEval scorer tokenises template + response with ``add_special_tokens=True`` (BOS
    first); our value reads prompts without added specials, so the template carries ``<s>``."""
    from valueguide import vocabularies

    llama = vocabularies.load("llama2")
    template = "\n\nHuman: {prompt}\n\nAssitant:"
    theirs = llama(template.replace("{prompt}", "Name a fruit."))["input_ids"]
    assert encode_prompt(llama, "<s>" + template, "Name a fruit.") == theirs


def test_a_folder_without_a_score_head_is_refused(tmp_path):
    body = gpt2_body()
    (tmp_path / "plain").mkdir()
    body.save_pretrained(tmp_path / "plain")
    with pytest.raises(ModelNotFoundError, match="score_head"):
        load_authors_value(str(tmp_path / "plain"), "{prompt}")


def pretrained_config(root, **fit_value) -> dict:
    config = toy_generation.config()
    config["fit_value"] = {**config["fit_value"], "mode": "pretrained", "pretrained": str(root / "rm"), **fit_value}
    return config


def test_generate_uses_the_pretrained_value_with_no_fit_and_matches_the_same_weights_as_a_fitted_folder(tmp_path):
    root = toy_generation.build(tmp_path)
    body = gpt2_body()
    head = save_authors_layout(root / "rm", body, "transformer", "GPT2ModelForTokenScore")
    same = ValueModel(body, "token", {"template": "{prompt}", "tokenizer": "world:small"})
    with torch.no_grad():
        same.head.weight.copy_(head.weight)
    same.save_pretrained(root / "same", tokenizer=TOK)

    def generate(config, value_path, out):
        return run_generate(config, "large", "ivg", [(root / "prompts.parquet", out)], root,
                            value_path=value_path, tuned_path=root / "tuned")[str(out)]

    pretrained = generate(pretrained_config(root), None, tmp_path / "pretrained.parquet")
    fitted = generate(toy_generation.config(), root / "same", tmp_path / "fitted.parquet")
    pd.testing.assert_frame_equal(pretrained.drop(columns="wall_time"), fitted.drop(columns="wall_time"))


def test_pretrained_mode_names_its_checkpoint_and_needs_one(tmp_path):
    config = load_config(Path(__file__).parents[1] / "config.yaml")
    config["fit_value"].update(mode="pretrained", pretrained=str(tmp_path / "rm"))
    specs = labelled_specs(validate_config(config))
    assert ("fit_value.pretrained", str(tmp_path / "rm")) in specs
    assert all(where != "fit_value.backbone" for where, _ in specs)
    config["fit_value"]["pretrained"] = None
    with pytest.raises(ConfigError, match="fit_value.pretrained"):
        validate_config(config)


@pytest.mark.parametrize("normalize", [False, True])
def test_the_authors_gold_reward_scores_as_their_score_model_with_eos_appended(tmp_path, normalize):
    """scripts/summarize_from_feedback: ``LlamaModelForScore`` (rm.py) reads text + EOS and returns
    ``score_head`` at the last attended token, normalised when the config says so."""
    body = llama_body()
    head = torch.nn.Linear(body.config.hidden_size, 1, bias=False)
    state = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state.update({"score_head.weight": head.weight.detach().clone(), "normalizer.mean": torch.tensor([0.5]),
                  "normalizer.var": torch.tensor([4.0]), "normalizer.count": torch.tensor([10])})
    folder = tmp_path / "gold"
    folder.mkdir()
    body.config.architectures = ["LlamaModelForScore"]
    body.config.update({"score_dim": 1, "bias": False, "do_normalize": normalize, "mean": [0.5], "var": [4.0]})
    body.config.save_pretrained(folder)
    TOK.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    texts = ["the film good", "a bad film b c bad"]  # padded to one width: the read follows the mask
    got = RewardModel.load(str(folder)).score(texts)
    for text, score in zip(texts, got):
        ids = TOK(text + TOK.eos_token, return_tensors="pt")["input_ids"]
        assert ids[0, -1] == TOK.eos_token_id
        with torch.no_grad():
            want = head(body(ids, attention_mask=torch.ones_like(ids)).last_hidden_state)[0, -1, 0]
        if normalize:
            want = (want - 0.5) / (2.0 + 1e-8)
        assert score == pytest.approx(float(want), abs=1e-4)
