"""Caches change nothing but cost: every method of the grid generates token for token what the
naive decoder (re-encoding every sequence at every step) generates, through CBS row copies,
padding, stop strings and per-model templates; chunk scores equal a from-scratch pass; a value
model is fed each response token once; scorers on re-tokenised text agree with incremental ones."""

import copy

import pytest
import torch

from tests.helpers.toy_models import TOY_WORDS, make_gpt2, make_mistral, make_tokenizer
from tests.test_decoding_toys import BLOCKED, EOS, TabularLM, random_logits
from valueguide.decoding import (
    ExplicitGuide, ExplicitScorer, Member, Sampling, TextExplicitScorer, TextImplicitScorer, VocabularyMismatch, build_decoder,
)
from valueguide.decoding.search import Decoder, Search
from valueguide.decoding.streams import Stream
from valueguide.value.model import ValueModel

TOK = make_tokenizer()
V = len(TOK)
PROMPTS = ["good", "the bad a b c film", "h"]
CBS = {"W": 2, "K": 2, "L": 3, "beta": 1.0}


def value_model(head: str, tokenizer=TOK, n_positions: int = 256) -> ValueModel:
    vm = ValueModel(make_gpt2(len(tokenizer), seed=7, n_layer=2, n_positions=n_positions).transformer, head,
                    {"template": "a {prompt} b"})
    torch.manual_seed(7)
    torch.nn.init.normal_(vm.head.weight)
    return vm.eval()


def members(head: str = "token", guided=None, n_positions: int = 256) -> dict:
    return {"guided": Member(guided or make_gpt2(V, seed=1, n_layer=2), TOK, "the film {prompt}"),
            "tuned": Member(make_gpt2(V, seed=2), TOK, "{prompt} good"),
            "untuned": Member(make_gpt2(V, seed=3), TOK, "{prompt} good"),
            "value": Member(value_model(head, n_positions=n_positions), TOK, "a {prompt} b", kind="value")}


def gold(texts):
    return [t.count("good") - t.count("bad") + 0.1 * len(t.split()) for t in texts]


def generate(method, models, use_cache=True, seed=0, stop=("film",), max_new_tokens=10):
    decoder = build_decoder(method, models, reward=gold, sampling=Sampling(0.9), max_new_tokens=max_new_tokens,
                            stop=stop, use_cache=use_cache)
    return decoder.generate(PROMPTS, torch.Generator().manual_seed(seed))


TOKEN_LEVEL = {"none": None, "implicit": {"kind": "implicit", "w": 1.0},
               "explicit-token": {"kind": "explicit", "beta": 2.0, "top_k": 5},
               "explicit-scalar": {"kind": "explicit", "beta": 2.0, "top_k": 5, "mask_outside_topk": True}}


@pytest.mark.parametrize("chunk", ["none", "implicit", "explicit", "gold"])
@pytest.mark.parametrize("token", list(TOKEN_LEVEL))
def test_cached_generation_equals_naive_generation(token, chunk):
    method = {}
    if TOKEN_LEVEL[token]:
        method["token"] = TOKEN_LEVEL[token]
    if chunk != "none":
        method["chunk"] = {"scorer": chunk, **CBS}
    models = members("scalar" if token == "explicit-scalar" else "token")
    cached, naive = generate(method, models), generate(method, models, use_cache=False)
    assert [g.ids for g in cached.generations] == [g.ids for g in naive.generations]
    assert [g.text for g in cached.generations] == [g.text for g in naive.generations]
    for role, fed in cached.meter.tokens.items():
        assert fed < naive.meter.tokens[role] or role == "reward"


def test_same_seed_same_output_other_seed_other_output():
    method = {"token": TOKEN_LEVEL["implicit"], "chunk": {"scorer": "explicit", **CBS}}
    models = members()
    first, again, other = (generate(method, models, seed=s).generations for s in (0, 0, 1))
    assert [g.ids for g in first] == [g.ids for g in again] != [g.ids for g in other]


def test_ivg_with_a_mistral_guided_model_is_cache_exact():
    method = {"token": TOKEN_LEVEL["implicit"], "chunk": {"scorer": "explicit", **CBS}}
    models = members(guided=make_mistral(V, seed=1, layers=2))
    cached, naive = generate(method, models), generate(method, models, use_cache=False)
    assert [g.ids for g in cached.generations] == [g.ids for g in naive.generations]


@pytest.mark.parametrize("chunk", [{"scorer": "explicit", "W": 1, "K": 4, "L": None},
                                   {"scorer": "implicit", "W": 2, "K": 2, "L": 5}])
def test_long_catch_up_feeds_in_blocks_with_the_same_result(chunk, monkeypatch):
    models = members()
    whole = generate({"chunk": chunk}, models)
    monkeypatch.setattr(Stream, "max_block", 2)
    blocks = generate({"chunk": chunk}, models)
    assert [g.ids for g in blocks.generations] == [g.ids for g in whole.generations]
    assert blocks.meter.tokens == whole.meter.tokens
    role = "value" if chunk["scorer"] == "explicit" else "tuned"
    assert blocks.meter.passes[role] > whole.meter.passes[role]


def test_value_model_is_fed_each_response_token_once():
    models = members("token")
    result = generate({"chunk": {"scorer": "explicit", **CBS}}, models)
    prompt_tokens = sum(len(models["value"].encode_prompt(p)) for p in PROMPTS)
    assert result.meter.tokens["value"] == prompt_tokens + result.sampled
    assert result.meter.passes["value"] <= 1 + -(-10 // CBS["L"])


class CheckedScorer(ExplicitScorer):
    """Checks every incremental chunk score against a from-scratch pass of the value model: the value
    at the last response token, which is not EOS for a row a stop string ended (as in the sampled
    data the value was fitted on)."""

    def __init__(self, member: Member, head: str, beta: float):
        super().__init__(head, beta)
        self.member, self.longest, self.stopped = member, 0, 0

    def score(self, rows):
        got = super().score(rows)
        for i in range(rows.n):
            ids = self.member.encode_prompt(rows.prompt(i)) + rows.response(i)
            with torch.no_grad():
                values = self.member.model(input_ids=torch.tensor([ids])).values[0]
            want = values[-1] if self.head == "scalar" else values[-2, ids[-1]]
            assert abs(float(got[i]) - self.beta * float(want)) < 1e-4
            self.longest = max(self.longest, len(ids))
            self.stopped += bool(rows.finished[i] and not rows.ended_eos[i])
        return got


@pytest.mark.parametrize("head", ["token", "scalar"])
def test_chunk_values_equal_a_from_scratch_pass_past_half_of_the_value_positions(head):
    film = TOK.convert_tokens_to_ids("film")

    def long_policy(prefix):  # never EOS, rarely the stop word: rows run long, a few stop
        z = random_logits(prefix, seed=4, vocab=V)
        z[EOS], z[film] = BLOCKED, -2.0
        return z

    models = members(head, guided=TabularLM(V, long_policy), n_positions=40)
    scorer = CheckedScorer(models["value"], head, beta=1.5)
    guide = ExplicitGuide(head, beta=1.0, top_k=4)
    decoder = Decoder(models, token_guides=[guide], scorer=scorer, search=Search(2, 3, 4), sampling=Sampling(1.0),
                      max_new_tokens=28, stop=("film",))
    decoder.generate(PROMPTS * 2, torch.Generator().manual_seed(3))
    assert scorer.longest > 20 + 8  # well past 40 / 2 positions
    assert scorer.stopped > 0


def test_token_level_guidance_across_vocabularies_needs_candidates_and_one_small_vocabulary():
    other = make_tokenizer(TOY_WORDS[::-1])
    models = members()
    for role in ("tuned", "untuned"):
        models[role] = Member(models[role].model, other)
    with pytest.raises(ValueError, match="top_k"):
        build_decoder({"token": {"kind": "implicit"}}, models)
    assert build_decoder({"token": {"kind": "implicit", "top_k": 3}}, models).text_roles == {"tuned", "untuned"}
    models["tuned"] = Member(models["tuned"].model, TOK)
    with pytest.raises(VocabularyMismatch, match="share one vocabulary"):
        build_decoder({"token": {"kind": "implicit", "top_k": 3}}, models)


def permuted(model, inverse: list[int]):
    """The same model for a tokenizer whose ids are permuted: new id j is old id inverse[j]."""
    model = copy.deepcopy(model)
    index = torch.tensor(inverse)
    body = model.backbone if isinstance(model, ValueModel) else model.transformer
    with torch.no_grad():
        body.wte.weight.copy_(body.wte.weight[index])
        if isinstance(model, ValueModel) and model.head_kind == "token":
            model.head.weight.copy_(model.head.weight[index])
            model.head.bias.copy_(model.head.bias[index])
    return model


@pytest.mark.parametrize("scorer", ["explicit-token", "explicit-scalar", "implicit"])
def test_scorers_on_retokenised_text_agree_with_incremental_scorers(scorer):
    """A permuted tokenizer with an equally permuted model is the same scorer under other ids.
    (The guided model is tabular so that it never draws the pad token, which decoding drops.)"""
    other = make_tokenizer(TOY_WORDS[::-1])
    inverse = [TOK.convert_tokens_to_ids(other.convert_ids_to_tokens(j)) for j in range(V)]
    other.pad_token = None  # like gpt2's tokenizer

    def policy(prefix):
        return random_logits(prefix, seed=5, vocab=V)

    models = members("scalar" if scorer == "explicit-scalar" else "token")
    models["guided"] = Member(TabularLM(V, policy), TOK)
    moved = dict(models)
    if scorer == "implicit":
        # text is read as one string, so a template ends where the response starts: with a space here
        moved["tuned"] = Member(permuted(models["tuned"].model, inverse), other, "{prompt} good ")
        moved["untuned"] = Member(permuted(models["untuned"].model, inverse), other, "{prompt} good ")
    else:
        moved["value"] = Member(permuted(models["value"].model, inverse), other, "a {prompt} b ", kind="value")
    method = {"chunk": {"scorer": scorer.split("-")[0], **CBS}}
    decoder = build_decoder(method, moved, sampling=Sampling(1.0), max_new_tokens=10, stop=("film",))
    assert isinstance(decoder.scorer, (TextExplicitScorer, TextImplicitScorer))
    text = decoder.generate(PROMPTS, torch.Generator().manual_seed(2)).generations
    incremental = build_decoder(method, models, sampling=Sampling(1.0), max_new_tokens=10, stop=("film",))
    want = incremental.generate(PROMPTS, torch.Generator().manual_seed(2)).generations
    assert [g.ids for g in text] == [g.ids for g in want]
