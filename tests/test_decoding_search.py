"""Whole-response behaviour on an enumerable world (3 words + EOS, responses of 2-3 tokens):
EFT samples the KL-regularised optimum, BoN the exact best-of-N distribution, CBS with the gold
scorer finds the reward argmax, and rows are selected, copied and frozen as docs/ALGORITHMS.md §4.3 says."""

import math
import zlib
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from tests.test_decoding_toys import (
    BLOCKED, EOS, TOKENS, TableScorer, TabularLM, best_of_n_probs, kl_optimal_logits_fn,
    random_logits, response_prob, responses, tokenizer,
)
from valueguide.decoding import Decoder, Member, Sampling, Search, build_decoder

TOK = tokenizer()
V = len(TOK)
PROMPT = "a"
PROMPT_IDS = (2,)


def policy(prefix: tuple) -> torch.Tensor:
    return random_logits(prefix, seed=1, vocab=V)


def reward_of(y) -> float:
    """Distinct pseudo-random rewards in [-2, 2)."""
    return (zlib.crc32(repr(y).encode()) % 4000) / 1000 - 2


def sample_counts(decoder, n_batches: int, per_batch: int) -> Counter:
    generator, counts = torch.Generator().manual_seed(0), Counter()
    for _ in range(n_batches):
        for g in decoder.generate([PROMPT] * per_batch, generator).generations:
            counts[tuple(g.ids)] += 1
    return counts


def chi2_pvalue(counts: Counter, probs: dict) -> float:
    """Pearson's test; responses expected fewer than 5 times are pooled into one cell."""
    assert set(counts) <= set(probs), set(counts) - set(probs)
    total = sum(counts.values())
    big = [k for k in probs if probs[k] * total >= 5]
    rare = [k for k in probs if k not in big]
    observed = [counts[k] for k in big] + [sum(counts[k] for k in rare)]
    expected = [probs[k] * total for k in big] + [sum(probs[k] for k in rare) * total]
    return chisquare(observed, expected, sum_check=False).pvalue


def test_eft_with_exact_tuned_model_samples_the_kl_optimal_policy():
    """pi_S* ∝ pi_S exp(r/beta) built exactly; EFT (w = 1) on pi_L = pi_S must sample pi*."""
    beta, max_len = 0.5, 2
    reward = {y: reward_of(y) for y in responses(max_len)}
    tuned = TabularLM(V, kl_optimal_logits_fn(policy, PROMPT_IDS, reward, beta, max_len))
    members = {"guided": Member(TabularLM(V, policy), TOK), "tuned": Member(tuned, TOK),
               "untuned": Member(TabularLM(V, policy), TOK)}
    decoder = build_decoder({"token": {"kind": "implicit", "w": 1.0}}, members, sampling=Sampling(1.0),
                            max_new_tokens=max_len)
    base = {y: response_prob(policy, PROMPT_IDS, y) for y in responses(max_len)}
    z = sum(p * math.exp(reward[y] / beta) for y, p in base.items())
    optimal = {y: p * math.exp(reward[y] / beta) / z for y, p in base.items()}
    # exactly, state by state: the guided next-token distribution is pi*(.|s)
    for state in [(), (2,), (3,), (4,)]:
        got = decoder.next_token_probs([PROMPT], [list(state)])[0]
        for a in TOKENS:
            want = optimal_next(optimal, state, a)
            assert abs(float(got[a]) - want) < 1e-5, (state, a)
    counts = sample_counts(decoder, 3, 1000)
    assert chi2_pvalue(counts, optimal) > 1e-3
    assert chi2_pvalue(counts, base) < 1e-6  # the test sees the difference from the untilted policy


def optimal_next(dist: dict, state: tuple, a: int) -> float:
    """pi(a | state) of a distribution over whole responses."""
    under = sum(p for y, p in dist.items() if y[:len(state)] == state and len(y) > len(state))
    return sum(p for y, p in dist.items() if y[:len(state) + 1] == state + (a,)) / under


def test_best_of_n_matches_the_exact_best_of_n_distribution():
    n, max_len = 3, 2
    reward = {y: reward_of(y) for y in responses(max_len)}
    decoder = Decoder({"guided": Member(TabularLM(V, policy), TOK)}, scorer=TableScorer(reward),
                      search=Search(W=1, K=n, L=None), sampling=Sampling(1.0), max_new_tokens=max_len)
    base = {y: response_prob(policy, PROMPT_IDS, y) for y in responses(max_len)}
    counts = sample_counts(decoder, 3, 1000)
    assert chi2_pvalue(counts, best_of_n_probs(base, reward, n)) > 1e-3
    assert chi2_pvalue(counts, base) < 1e-6


def uniform(prefix: tuple) -> torch.Tensor:
    z = torch.zeros(V)
    z[0] = BLOCKED
    return z


def test_cbs_with_gold_scorer_and_many_rows_returns_the_reward_argmax():
    max_len = 3
    texts = {TOK.decode(list(y), skip_special_tokens=True) for y in responses(max_len)}
    text_reward = {t: reward_of(t) for t in texts}

    def gold(texts):
        return [text_reward[t[len(PROMPT):]] for t in texts]

    decoder = build_decoder({"chunk": {"scorer": "gold", "W": 4, "K": 256, "L": 3}},
                            {"guided": Member(TabularLM(V, uniform), TOK)}, reward=gold,
                            sampling=Sampling(1.0), max_new_tokens=max_len)
    out = decoder.generate([PROMPT, PROMPT], torch.Generator().manual_seed(0)).generations
    best = max(text_reward, key=text_reward.get)
    assert [g.text for g in out] == [best, best]


@pytest.mark.parametrize("W,K", [(1, 64), (2, 32)])
def test_multi_chunk_cbs_finds_the_argmax_of_an_additive_gold_reward(W, K):
    """With a reward that adds per-token scores, keeping the best prefixes chunk by chunk is exact."""
    per_token = torch.randn(3, V, generator=torch.Generator().manual_seed(3))

    def gold(texts):
        return [sum(float(per_token[t, TOK.convert_tokens_to_ids(w)]) for t, w in enumerate(s[len(PROMPT):].split()))
                for s in texts]

    def no_eos(prefix):
        z = uniform(prefix)
        z[EOS] = BLOCKED
        return z

    decoder = build_decoder({"chunk": {"scorer": "gold", "W": W, "K": K, "L": 1}},
                            {"guided": Member(TabularLM(V, no_eos), TOK)}, reward=gold,
                            sampling=Sampling(1.0), max_new_tokens=3)
    out = decoder.generate([PROMPT], torch.Generator().manual_seed(0)).generations[0]
    assert out.ids == [2 + int(per_token[t, 2:].argmax()) for t in range(3)]


def test_cbs_keeps_the_best_w_rows_with_ties_by_row_order_and_copies_each_k_times():
    scorer = TableScorer(lambda y: {2: 1.0, 3: 1.0, 4: 0.0}.get(y[-1], -1.0))
    decoder = Decoder({"guided": Member(TabularLM(V, uniform), TOK)}, scorer=scorer,
                      search=Search(W=2, K=3, L=1), sampling=Sampling(1.0), max_new_tokens=3)
    decoder.generate([PROMPT], torch.Generator().manual_seed(0))
    for before, after in zip(scorer.calls, scorer.calls[1:]):
        scores = [scorer.table(y) for y in before]
        kept = sorted(range(len(before)), key=lambda i: -scores[i])[:2]  # Python's sort is stable
        assert [y[:len(before[0])] for y in after] == [before[i] for i in kept for _ in range(3)]
    assert len(scorer.calls) == 3


def test_finished_rows_stay_as_they_are_and_search_stops_when_the_best_are_finished():
    def eos_likely(prefix):
        z = uniform(prefix)
        z[EOS] = 1.0
        return z

    scorer = TableScorer(lambda y: 1.0 if y[-1] == EOS else float(len(y)) / 10)
    decoder = Decoder({"guided": Member(TabularLM(V, eos_likely), TOK)}, scorer=scorer,
                      search=Search(W=2, K=4, L=1), sampling=Sampling(1.0), max_new_tokens=6)
    out = decoder.generate([PROMPT] * 4, torch.Generator().manual_seed(1)).generations
    assert all(g.finished and g.ids[-1] == EOS for g in out)
    for before, after in zip(scorer.calls, scorer.calls[1:]):
        for y in after:
            parent = y[:len(before[0])]
            if parent and parent[-1] == EOS:
                assert y == parent  # copies of a finished row never grow
    assert len(scorer.calls) < 6


def test_stop_strings_finish_a_row_after_the_token_that_completes_them():
    decoder = build_decoder({}, {"guided": Member(TabularLM(V, uniform), TOK)}, sampling=Sampling(1.0),
                            max_new_tokens=6, stop=["b"])
    out = decoder.generate([PROMPT] * 64, torch.Generator().manual_seed(0)).generations
    stopped = [g for g in out if "b" in g.text]
    assert stopped and all(g.finished and g.ids[-1] == 3 and g.ids.count(3) == 1 for g in stopped)
    assert all(g.ids[-1] == EOS or len(g.ids) == 6 for g in out if g not in stopped)
