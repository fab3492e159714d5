"""Guidance across vocabularies is exact: checked against full re-encoding, by brute force.

Two toy tokenizers whose boundaries disagree (``toy_tokenizers``: a byte-level BPE and a
SentencePiece-style BPE with byte fallback) take turns as the guided and the guiding vocabulary, and
the paper's own pairs run too: a Mistral-vocabulary model guided by a Llama-2-vocabulary pair (Tulu's)
and a GPT-2-vocabulary value (``vocabularies``), through their chat formats.
The references here re-tokenise the whole text and run one unpadded, uncached pass per sequence
(per candidate, for token-level guidance), straight from docs/ALGORITHMS.md §4.5-4.6:

- ``R(u) = sum_{j >= b} [log pi*(v_j | v_<j) - log pi(v_j | v_<j)]`` over ``v = tok(template + u)``
  (EOS appended when the row ended with EOS), ``b`` where ``v`` stops matching ``tok(template)``;
- ``V(u)``: the value model's score at the last token of ``v`` (token head: ``Q(v_<T, v_T)``);
- EFT: ``z(a) + w (R(u + text(a)) - R(u))``, VAS: ``z(a) + beta (Q(a) - mean_C Q)`` over ``C = top-k(z)``,
  and nothing outside ``C`` (the bonus is defined on ``C`` only);
- the guided EOS as a candidate: the guiding EOS after the row's full decode, the text it is output
  with once it ends (a held-back partial character shows as U+FFFD there).
"""

import pytest
import torch

from tests.helpers.toy_models import make_gpt2, make_tokenizer
from tests.helpers.toy_tokenizers import WORDS, byte_bpe, real, sentencepiece_bpe
from tests.test_decoding_distributions import reference_probs
from tests.test_decoding_toys import TabularLM
from tests.test_detokenize import candidate_text
from valueguide.decoding import Member, Sampling, build_decoder
from valueguide.decoding.detokenize import REPLACEMENT, text_so_far
from valueguide.decoding.scorers import TextExplicitScorer, TextImplicitScorer
from valueguide.templates import render_for
from valueguide.texts import common_prefix, decode
from valueguide.value.model import ValueModel

# guided <- small pair, value: factories of their tokenizers
PAIRS = {"bpe->spm": (byte_bpe, sentencepiece_bpe, sentencepiece_bpe),
         "spm->bpe": (sentencepiece_bpe, byte_bpe, byte_bpe),
         "mistral<-llama2,gpt2": (real("mistral"), real("llama2"), real("gpt2"))}
TOY = ["bpe->spm", "spm->bpe"]
TEMPLATES = {"guided": "Review: {prompt}", "small": "<s>Q: {prompt}\nA: ", "value": "{prompt} => "}
CHAT = {"guided": "chat", "small": "chat", "value": "{prompt}\n"}  # the paper's: Mistral's and Tulu's chat formats
PROMPTS = ["the film was", "café €5 日本"]


def value_model(tok, head: str, seed: int = 7, n_positions: int = 256) -> ValueModel:
    vm = ValueModel(make_gpt2(len(tok), seed=seed, n_layer=2, n_positions=n_positions).transformer, head, {})
    torch.manual_seed(seed)
    torch.nn.init.normal_(vm.head.weight)
    torch.nn.init.normal_(vm.head.bias)
    return vm.eval()


def members(pair: str, head: str = "token", guided=None, n_positions: int = 256) -> dict:
    guided_tok, small, value = (make() for make in PAIRS[pair])
    t = TEMPLATES if pair in TOY else CHAT
    return {"guided": Member(guided or make_gpt2(len(guided_tok), seed=1, n_layer=2), guided_tok, t["guided"]),
            "tuned": Member(make_gpt2(len(small), seed=2, n_positions=n_positions), small, t["small"]),
            "untuned": Member(make_gpt2(len(small), seed=3, n_positions=n_positions), small, t["small"]),
            "value": Member(value_model(value, head, n_positions=n_positions), value, t["value"], "value")}


# --- references ---------------------------------------------------------------------------------


def own_tokens(member: Member, prompt: str, text: str, eos: bool) -> tuple[list[int], int]:
    tok = member.tokenizer
    template = render_for(tok, member.template, prompt)
    ids = tok(template + text, add_special_tokens=False).input_ids + ([tok.eos_token_id] if eos else [])
    return ids, common_prefix(tok(template, add_special_tokens=False).input_ids, ids)


@torch.no_grad()
def reference_R(models: dict, prompt: str, text: str, eos: bool = False) -> float:
    ids, b = own_tokens(models["untuned"], prompt, text, eos)
    total = 0.0
    for role, sign in (("tuned", 1.0), ("untuned", -1.0)):
        logits = models[role].model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        total += sign * sum(float(logp[j - 1, ids[j]]) for j in range(max(b, 1), len(ids)))
    return total


@torch.no_grad()
def reference_V(models: dict, prompt: str, text: str, eos: bool = False) -> float:
    member = models["value"]
    ids, _ = own_tokens(member, prompt, text, eos)
    values = member.model(input_ids=torch.tensor([ids])).values[0].float()
    if member.model.head_kind == "scalar":
        return float(values[-1])
    return float(values[-2, ids[-1]]) if len(ids) > 1 else 0.0


@torch.no_grad()
def guided_logits(models: dict, prompt: str, response: list[int]) -> torch.Tensor:
    member = models["guided"]
    return member.model(input_ids=torch.tensor([member.encode_prompt(prompt) + response])).logits[0, -1].float()


# --- next-token distributions -----------------------------------------------------------------------


def responses_for(tok) -> list[list[int]]:
    """Two responses of one length; the second ends inside a multi-byte character where it can."""
    euro = tok("€", add_special_tokens=False).input_ids
    words = tok(" the film was", add_special_tokens=False).input_ids
    first = tok(" wonderful ça va", add_special_tokens=False).input_ids
    n = max(len(first), len(words) + len(euro) - 1)
    second = (words + euro[:-1] if len(euro) > 1 else words + euro)
    pad = tok(" good", add_special_tokens=False).input_ids
    while len(second) < n:
        second = pad[:1] + second
    while len(first) < n:
        first = first + pad[:1]
    return [first[:n], second[-n:]]


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("k,masked", [(6, None), (6, True)])
def test_cross_vocabulary_eft_is_the_text_log_ratio_on_the_top_k(pair, k, masked):
    models = members(pair)
    responses = responses_for(models["guided"].tokenizer)
    w, temperature = 0.7, 0.9
    method = {"token": {"kind": "implicit", "w": w, "top_k": k, "mask_outside_topk": masked}}
    decoder = build_decoder(method, models, sampling=Sampling(temperature))
    assert decoder.text_roles == {"tuned", "untuned"}
    got = decoder.next_token_probs(PROMPTS, responses)
    for i, (prompt, response) in enumerate(zip(PROMPTS, responses)):
        want = text_eft_logits(models, prompt, response, w, k)
        torch.testing.assert_close(got[i], reference_probs(want, temperature), atol=2e-5, rtol=0)


def text_eft_logits(models: dict, prompt: str, response: list[int], w: float, k: int) -> torch.Tensor:
    """EFT across vocabularies from scratch: ``z(a) + w (R(u + text(a)) - R(u))`` on ``C = top-k(z)``, -inf
    elsewhere (nothing outside C, masked or unset)."""
    tok = models["guided"].tokenizer
    z = guided_logits(models, prompt, response)
    now = reference_R(models, prompt, text_so_far(tok, response))
    want = torch.full_like(z, float("-inf"))
    for a in z.topk(k).indices.tolist():
        after = (reference_R(models, prompt, decode(tok, response), eos=True) if a == tok.eos_token_id
                 else reference_R(models, prompt, candidate_text(tok, response, a)))
        want[a] = z[a] + w * (after - now)
    return want


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("kind", ["implicit", "explicit"])
@pytest.mark.parametrize("sampling_top_k", [0, 4])
def test_across_vocabularies_nothing_outside_the_candidates_is_drawn(pair, kind, sampling_top_k):
    """The bonus is defined on C = top-k(z) only. Sampling's top-k acts on the guided logits, so with
    the guide's k it would let an unguided token from outside C replace a candidate the bonus pushed
    down; without it every token outside C would keep its unguided logit. No mass leaves C."""
    k = 4
    models = members(pair)
    responses = responses_for(models["guided"].tokenizer)
    method = {"token": {"kind": kind, "w": 4.0, "beta": 4.0, "top_k": k}}
    probs = build_decoder(method, models, sampling=Sampling(1.0, sampling_top_k)).next_token_probs(PROMPTS, responses)
    for i, (prompt, response) in enumerate(zip(PROMPTS, responses)):
        inside = torch.zeros_like(probs[i], dtype=torch.bool)
        inside[guided_logits(models, prompt, response).topk(k).indices] = True
        assert float(probs[i][~inside].sum()) == 0.0
        assert float(probs[i][inside].sum()) == pytest.approx(1.0, abs=1e-6)


def held_back_response(tok) -> list[int]:
    """A response whose last token ends inside a multi-byte character (one the tokenizer splits)."""
    for char in ("€", "😀", "🦜", "𝄞"):
        ids = tok(" the film was " + char, add_special_tokens=False).input_ids
        for m in range(len(ids) - 1, 0, -1):
            if decode(tok, ids[:m]).endswith(REPLACEMENT):
                return ids[:m]
    raise AssertionError("no character splits into several tokens")


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("use_cache", [True, False])
def test_the_guided_eos_as_a_candidate_scores_as_the_row_it_ends(pair, use_cache):
    """After a held-back partial character the guided EOS is scored, as a candidate, on the text
    the row is output with once it ends (its full decode, U+FFFD included) plus the guiding EOS: what
    the row scores once EOS is drawn (the implicit pair's ``R`` and the value alike)."""
    models = members(pair)
    tok = models["guided"].tokenizer
    response, eos = held_back_response(tok), tok.eos_token_id
    assert REPLACEMENT in decode(tok, response) and text_so_far(tok, response) != decode(tok, response)
    method = {"token": {"kind": "implicit", "w": 1.0, "top_k": 2}, "chunk": {"scorer": "explicit", "W": 1, "K": 2}}
    decoder = build_decoder(method, models, use_cache=use_cache)
    assert decoder.text_roles == {"tuned", "untuned", "value"}
    rows = decoder._start(PROMPTS[:1], 1)
    rows.set_responses([response])
    candidates = torch.tensor([[eos, tok(" good", add_special_tokens=False).input_ids[0]]])
    as_candidate = {**rows.streams["tuned"].candidate_scores(rows, candidates, eos)[0],
                    **rows.streams["value"].candidate_scores(rows, candidates, eos)[0]}
    rows.append(torch.tensor([eos]))
    ended = {**rows.streams["tuned"].response_scores(rows), **rows.streams["value"].response_scores(rows)}
    assert rows.text(0) == decode(tok, response)
    for role in ("tuned", "untuned", "value"):
        assert float(as_candidate[role][0, 0]) == pytest.approx(float(ended[role][0]), abs=1e-5), role
    want = reference_R(models, PROMPTS[0], decode(tok, response), eos=True)
    assert float(ended["tuned"][0] - ended["untuned"][0]) == pytest.approx(want, abs=1e-4)


def test_small_models_with_eager_attention_score_candidates_as_with_sdpa():
    """Eager attention takes the candidates' tree mask as an additive mask (and the models run
    through transformers, not packed): the distribution is the one sdpa gives."""
    method = {"token": {"kind": "implicit", "w": 0.7, "top_k": 6}}
    got = {}
    for attn in ("sdpa", "eager"):
        models = members("bpe->spm")
        for role in ("tuned", "untuned"):
            models[role].model.set_attn_implementation(attn)
        decoder = build_decoder(method, models, sampling=Sampling(0.9))
        got[attn] = decoder.next_token_probs(PROMPTS, responses_for(models["guided"].tokenizer))
    torch.testing.assert_close(got["eager"], got["sdpa"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("head", ["token", "scalar"])
def test_cross_vocabulary_vas_centres_the_text_values_of_the_top_k(pair, head):
    models = members(pair, head)
    tok = models["guided"].tokenizer
    responses = responses_for(tok)
    beta, k = 1.5, 5
    decoder = build_decoder({"token": {"kind": "explicit", "beta": beta, "top_k": k}}, models, sampling=Sampling(1.0))
    got = decoder.next_token_probs(PROMPTS, responses)
    for i, (prompt, response) in enumerate(zip(PROMPTS, responses)):
        z = guided_logits(models, prompt, response)
        cand = z.topk(k).indices.tolist()
        q = torch.tensor([reference_V(models, prompt, decode(tok, response), eos=True) if a == tok.eos_token_id
                          else reference_V(models, prompt, candidate_text(tok, response, a)) for a in cand])
        want = torch.full_like(z, float("-inf"))
        want[cand] = z[cand] + beta * (q - q.mean())
        torch.testing.assert_close(got[i], reference_probs(want, 1.0), atol=2e-5, rtol=0)


def test_a_candidate_that_completes_no_character_scores_as_the_row_does():
    """Inside a multi-byte character the guided model's candidates add no whole text: psi = 0 for
    them, and a value reads the text without them (the documented rule)."""
    models = members("bpe->spm")
    tok = models["guided"].tokenizer
    euro = tok("€", add_special_tokens=False).input_ids
    assert len(euro) == 3  # bytes of one character, in three tokens
    response = tok(" the", add_special_tokens=False).input_ids + euro[:1]
    decoder = build_decoder({"token": {"kind": "implicit", "w": 1.0, "top_k": len(tok)}}, models,
                            sampling=Sampling(1.0))
    probs = decoder.next_token_probs(PROMPTS[:1], [response])[0]
    z = guided_logits(models, PROMPTS[0], response)
    middle = euro[1]  # completes nothing: the character still needs its third byte
    assert candidate_text(tok, response, middle) == text_so_far(tok, response)
    ratio = float(probs[middle] / probs[euro[0]])
    assert ratio == pytest.approx(float(torch.exp(z[middle] - z[euro[0]]) * torch.exp(torch.tensor(
        -(reference_R(models, PROMPTS[0], candidate_text(tok, response, euro[0]))
          - reference_R(models, PROMPTS[0], text_so_far(tok, response)))))), rel=1e-4)


def test_the_text_path_on_one_shared_tokenizer_is_the_shared_path_on_the_top_k():
    """With two copies of one word-level tokenizer, re-tokenising text gives back the guided tokens,
    so the text definitions reduce to the shared vocabulary's token-level guidance restricted to the
    top-k and masked outside it (which the shared path does with ``mask_outside_topk: true`` only)."""
    tok = make_tokenizer()
    vocab = len(tok)
    models = {"guided": Member(make_gpt2(vocab, seed=1, n_layer=2), tok, "the film {prompt}"),
              "tuned": Member(make_gpt2(vocab, seed=2), tok, "{prompt} good "),
              "untuned": Member(make_gpt2(vocab, seed=3), tok, "{prompt} good "),
              "value": Member(value_model(tok, "scalar"), tok, "a {prompt} b ", "value")}
    responses = [[4, 5, 1], [7, 8, 9]]  # the first ends with EOS (id 1) in the middle: it is a plain id here
    responses = [[4, 5, 6], [7, 8, 9]]
    for method in ({"token": {"kind": "implicit", "w": 0.8, "top_k": 5}},
                   {"token": {"kind": "explicit", "beta": 2.0, "top_k": 5}}):
        text = build_decoder(method, models, read_text=True, sampling=Sampling(0.8))
        masked = {"token": {**method["token"], "mask_outside_topk": True}}
        shared = build_decoder(masked, models, sampling=Sampling(0.8))
        assert text.text_roles and not shared.text_roles
        torch.testing.assert_close(text.next_token_probs(["good", "a b"], responses),
                                   shared.next_token_probs(["good", "a b"], responses), atol=2e-5, rtol=0)


# --- chunk scorers over long generations -----------------------------------------------------------------


class Checked:
    """Wraps a text scorer: every chunk score must equal the reference on the whole text."""

    def __init__(self, scorer, models, reference):
        self.scorer, self.models, self.reference, self.roles = scorer, models, reference, scorer.roles
        self.checked = self.longest = self.multibyte = 0

    def score(self, rows):
        got = self.scorer.score(rows)
        for i in range(rows.n):
            finished = bool(rows.finished[i])
            text = rows.response_text(i, finished)
            want = self.reference(self.models, rows.prompt(i), text, bool(rows.ended_eos[i]))
            # R sums log-probs over up to ~200 positions in float32: its rounding grows with length
            assert float(got[i]) == pytest.approx(want, abs=1e-3 if "tuned" in self.roles else 1e-4)
            ids, _ = own_tokens(self.models["untuned" if "tuned" in self.roles else "value"], rows.prompt(i), text,
                                bool(rows.ended_eos[i]))
            self.checked, self.longest = self.checked + 1, max(self.longest, len(ids))
            self.multibyte += any(ord(c) > 127 for c in text)
        return got


def long_policy(tok):
    """A guided model that writes words of the corpus (multi-byte ones too) and rarely EOS."""
    words = [tok(" " + w, add_special_tokens=False).input_ids for w in WORDS]
    preferred = sorted({t for w in words for t in w})

    def logits(prefix):
        g = torch.Generator().manual_seed(len(prefix) * 7919 + sum(prefix) % 7919)
        z = torch.full((len(tok),), -8.0)
        z[preferred] = torch.randn(len(preferred), generator=g)
        z[tok.eos_token_id] = -4.0
        z[tok.pad_token_id] = -50.0
        return z
    return logits


@pytest.mark.parametrize("pair,n_positions", [("bpe->spm", 128), ("spm->bpe", 240), ("mistral<-llama2,gpt2", 128)])
@pytest.mark.parametrize("scorer", ["explicit-token", "explicit-scalar", "implicit"])
def test_incremental_text_scores_equal_full_reencoding_past_half_the_context(pair, n_positions, scorer):
    """Rows copied by CBS, stopped by a stop string or EOS, carrying multi-byte characters, and
    longer than half of the scorer's positions (the byte-level side needs more tokens per text)."""
    kind, head = (scorer.split("-") + ["token"])[:2]
    guided_tok = PAIRS[pair][0]()
    models = members(pair, head, guided=TabularLM(len(guided_tok), long_policy(guided_tok)), n_positions=n_positions)
    decoder = build_decoder({"chunk": {"scorer": kind, "W": 2, "K": 3, "L": 4, "beta": 1.0}}, models,
                            sampling=Sampling(1.0), max_new_tokens=48, stop=("boring",))
    wrapped = TextImplicitScorer if kind == "implicit" else TextExplicitScorer
    assert isinstance(decoder.scorer, wrapped)
    decoder.scorer = Checked(decoder.scorer, models, reference_R if kind == "implicit" else reference_V)
    decoder.generate(PROMPTS * 2, torch.Generator().manual_seed(3))
    assert decoder.scorer.longest > n_positions // 2 and decoder.scorer.multibyte > 0


@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("method", [
    {"token": {"kind": "implicit", "w": 1.0, "top_k": 6}, "chunk": {"scorer": "explicit", "W": 2, "K": 2, "L": 3}},
    {"token": {"kind": "explicit", "beta": 1.0, "top_k": 6}, "chunk": {"scorer": "implicit", "W": 2, "K": 2, "L": 3}},
    {"chunk": {"scorer": "explicit", "W": 1, "K": 4, "L": None}},
])
def test_cached_cross_vocabulary_decoding_equals_full_reencoding_token_for_token(pair, method):
    guided_tok = PAIRS[pair][0]()
    models = members(pair, guided=TabularLM(len(guided_tok), long_policy(guided_tok)))
    runs = [build_decoder(method, models, sampling=Sampling(1.0), max_new_tokens=16, use_cache=cache)
            .generate(PROMPTS, torch.Generator().manual_seed(5)) for cache in (True, False)]
    assert [g.ids for g in runs[0].generations] == [g.ids for g in runs[1].generations]
    chunked = method["chunk"]["L"] is not None  # best-of-N reads each row once either way
    for role in set(runs[0].meter.tokens) - {"guided"}:
        assert runs[0].meter.tokens[role] <= runs[1].meter.tokens[role] / (2 if chunked else 1)


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_input_is_refused_by_name_before_generating():
    models = members("bpe->spm")
    models["value"] = Member(models["value"].model, models["value"].tokenizer, "chat", "value")
    with pytest.raises(ValueError, match="value model's tokenizer cannot render its template 'chat'"):
        build_decoder({"chunk": {"scorer": "explicit", "W": 2, "K": 2, "L": 3}}, models)
    models = members("bpe->spm")
    with pytest.raises(ValueError, match="top_k"):
        build_decoder({"token": {"kind": "implicit", "top_k": 0}}, models)
    for kind, role in (("implicit", "untuned"), ("explicit", "value")):
        with pytest.raises(ValueError, match=f"mask_outside_topk: false cannot be honoured: the {role} model"):
            build_decoder({"token": {"kind": kind, "top_k": 4, "mask_outside_topk": False}}, models)


def test_the_value_fit_reads_a_response_in_another_vocabulary_as_the_scorer_does():
    """Fitted on samples of a policy with another tokenizer, the value model sees ``tok(template +
    text)`` and the response from where it leaves the template's tokens: what ``TextStream`` feeds."""
    from valueguide.value.model import value_examples

    models = members("bpe->spm")
    policy = models["guided"].tokenizer
    ids = [policy(" wonderful ça va", add_special_tokens=False).input_ids + [policy.eos_token_id],
           policy(" naïve €5", add_special_tokens=False).input_ids]
    examples = value_examples(PROMPTS, ids, [1.0, 2.0], models["value"].tokenizer, TEMPLATES["value"], policy)
    for prompt, response, example in zip(PROMPTS, ids, examples):
        want, boundary = own_tokens(models["value"], prompt, decode(policy, response),
                                    eos=response[-1] == policy.eos_token_id)
        assert example.ids == want and example.n_response == len(want) - boundary


@pytest.mark.parametrize("pair", ["shared", "bpe->spm"])
def test_a_row_a_stop_string_ended_is_scored_with_the_value_the_fit_trains_for_it(pair):
    """The sample stage stores a stop-finished response without EOS and the fit puts its reward on the
    value of its last token (``value_examples``, ``predict_last``); the chunk scorer must read that
    value, not one at an appended EOS, which no fit ever trained."""
    from valueguide.decoding.scorers import ExplicitScorer
    from valueguide.value.model import predict_last, value_examples

    tok = byte_bpe()
    guided = TabularLM(len(tok), long_policy(tok))
    if pair == "shared":
        models = {"guided": Member(guided, tok, TEMPLATES["guided"]),
                  "value": Member(value_model(tok, "token"), tok, TEMPLATES["value"], kind="value")}
    else:
        models = members(pair, guided=guided)
    policy, value = models["guided"].tokenizer, models["value"]
    stop = "s"
    decoder = build_decoder({"chunk": {"scorer": "explicit", "W": 1, "K": 16, "L": None, "beta": 1.0}}, models,
                            sampling=Sampling(1.0), max_new_tokens=12, stop=(stop,))
    assert isinstance(decoder.scorer, TextExplicitScorer if pair != "shared" else ExplicitScorer)
    seen = []
    score = decoder.scorer.score

    def spy(rows):
        out = score(rows)
        seen.append(([rows.generation(i) for i in range(rows.n)], out.clone()))
        return out

    decoder.scorer.score = spy
    decoder.generate(PROMPTS[:1], torch.Generator().manual_seed(0))
    generations, scores = seen[-1]
    stopped = [i for i, g in enumerate(generations) if g.finished and g.text.endswith(stop)]
    assert stopped, "no row ended at the stop string: the test proves nothing"
    ids = [generations[i].ids for i in stopped]
    assert all(row[-1] != policy.eos_token_id for row in ids)
    examples = value_examples(PROMPTS[:1] * len(ids), ids, [0.0] * len(ids), value.tokenizer, value.template,
                              None if pair == "shared" else policy)
    learned = predict_last(value.model, examples, value.tokenizer.pad_token_id or 0)
    torch.testing.assert_close(scores[stopped].double(), torch.from_numpy(learned), atol=1e-5, rtol=0)
    eos = value.tokenizer.eos_token_id
    at_eos = predict_last(value.model, [type(e)(e.ids + [eos], e.n_response + 1, e.reward) for e in examples],
                          value.tokenizer.pad_token_id or 0)
    assert not torch.allclose(scores[stopped].double(), torch.from_numpy(at_eos), atol=1e-3)
