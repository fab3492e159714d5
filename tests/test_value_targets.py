"""TD(lambda) targets: hand-computed numbers, the λ = 0 / λ = 1 identities, and convergence of
TD(λ) to V^{π_b} on a toy problem whose every response is enumerated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.helpers.toy_models import make_tokenizer
from valueguide.value.fit import value_loss
from valueguide.value.model import Example, collate, response_values
from valueguide.value.targets import lambda_returns, last_positions

GARBAGE = 9.0  # predictions at padding and prompt positions; must not leak into targets


def test_hand_computed_batch_with_eos():
    tok = make_tokenizer()
    ids = tok.convert_tokens_to_ids
    # row 0 ends with EOS (the terminal token); row 1 was truncated and is left padded.
    examples = [Example(ids(["the", "film", "good", "a", "<eos>"]), 3, 3.0),
                Example(ids(["the", "film", "bad", "good"]), 2, -2.0)]
    batch = collate(examples, tok.pad_token_id)
    assert batch.input_ids[1, 0] == tok.pad_token_id
    values = torch.tensor([[GARBAGE, GARBAGE, 0.5, 1.0, 2.0],
                           [GARBAGE, GARBAGE, GARBAGE, 1.0, -1.0]])
    targets = lambda_returns(values, batch.rewards, batch.response_mask, gamma=0.9, lam=0.5)
    # row 0, backwards: G=3 at EOS; δ=.9·2−1=.8, A=.8+.45·1=1.25, G=2.25; δ=.9·1−.5=.4, A=.4+.45·1.25, G=1.4625
    # row 1, backwards: δ=−2+1=−1, G=−2; δ=.9·(−1)−1=−1.9, A=−1.9+.45·(−1)=−2.35, G=1−2.35=−1.35
    expected = torch.tensor([[0, 0, 1.4625, 2.25, 3.0], [0, 0, 0, -1.35, -2.0]])
    torch.testing.assert_close(targets, expected)


def _random_batch(seed: int, right_aligned: bool):
    """Rows of 1..6 real tokens in a width of 7, either left- or right-aligned."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (5,), generator=g)
    positions = torch.arange(7)[None, :]
    mask = positions >= 7 - lengths[:, None] if right_aligned else positions < lengths[:, None]
    values = torch.where(mask, torch.randn(5, 7, generator=g), torch.full((5, 7), GARBAGE))
    return values, torch.randn(5, generator=g), mask


@pytest.mark.parametrize("right_aligned", [False, True])
def test_lambda_one_gamma_one_is_monte_carlo(right_aligned):
    values, rewards, mask = _random_batch(0, right_aligned)
    targets = lambda_returns(values, rewards, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(targets, torch.where(mask, rewards[:, None], 0.0))


@pytest.mark.parametrize("right_aligned", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_lambda_zero_is_one_step_td(right_aligned, gamma):
    values, rewards, mask = _random_batch(1, right_aligned)
    targets = lambda_returns(values, rewards, mask, gamma=gamma, lam=0.0)
    for row in range(5):
        real = torch.nonzero(mask[row]).flatten().tolist()
        expected = [gamma * values[row, nxt] for nxt in real[1:]] + [rewards[row]]
        torch.testing.assert_close(targets[row, real], torch.stack(expected))
        assert not targets[row, ~mask[row]].any()


def test_alignment_does_not_change_targets():
    left_values, rewards, left_mask = _random_batch(2, right_aligned=False)
    right_values, _, right_mask = _random_batch(2, right_aligned=True)
    right_values[right_mask] = left_values[left_mask]  # the same trajectories, shifted right
    left = lambda_returns(left_values, rewards, left_mask, gamma=0.9, lam=0.7)
    right = lambda_returns(right_values, rewards, right_mask, gamma=0.9, lam=0.7)
    torch.testing.assert_close(left[left_mask], right[right_mask])


def test_targets_carry_no_gradient_and_need_a_response_token():
    values = torch.zeros(1, 3, requires_grad=True)
    assert not lambda_returns(values, torch.ones(1), torch.ones(1, 3, dtype=torch.bool)).requires_grad
    assert last_positions(torch.tensor([[0, 1, 1, 0]])).tolist() == [2]
    with pytest.raises(ValueError, match="at least one response token"):
        lambda_returns(values, torch.ones(1), torch.zeros(1, 3, dtype=torch.bool))


# --- convergence to V^{π_b} on an enumerable toy problem --------------------------------------

EOS, ACTIONS, PROMPT, MAX_LEN, VOCAB = 1, (1, 2, 3, 4), 5, 3, 6  # EOS + tokens a, b, c


def _toy_problem(seed: int = 0):
    """A prefix-dependent policy (every probability ≥ 0.1), every response (EOS-ended or cut at
    MAX_LEN tokens) with its probability, and a random reward table."""
    rng = np.random.default_rng(seed)
    policy = {}
    for n in range(MAX_LEN):
        for prefix in itertools.product(ACTIONS[1:], repeat=n):
            policy[prefix] = 0.1 + 0.6 * rng.dirichlet(np.ones(len(ACTIONS)))
    responses = {}

    def walk(prefix, prob):
        if (prefix and prefix[-1] == EOS) or len(prefix) == MAX_LEN:
            responses[prefix] = prob
            return
        for a, p in zip(ACTIONS, policy[prefix]):
            walk(prefix + (a,), prob * p)

    walk((), 1.0)
    rewards = {y: float(rng.normal(scale=2.0)) for y in responses}
    return policy, responses, rewards


def _true_values(policy, rewards, gamma):
    """V(p) of every non-empty prefix p (the state after its last token) by enumeration."""
    values = {}

    def value(prefix):
        if prefix in rewards:
            values[prefix] = rewards[prefix]
        else:
            values[prefix] = gamma * sum(p * value(prefix + (a,)) for a, p in zip(ACTIONS, policy[prefix]))
        return values[prefix]

    for a in ACTIONS:
        value((a,))
    return values


@pytest.mark.parametrize("head", ["token", "scalar"])
@pytest.mark.parametrize("lam,gamma", [(0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (0.5, 0.9)])
def test_td_lambda_converges_to_enumerated_values(head, lam, gamma):
    """A tabular value (one parameter per prefix) trained on the exact expectation over every
    response: the real loss with probability weights, TD(λ) targets recomputed every step.

    For fixed targets the loss is a separable quadratic in the table, so each step is the exact
    Newton step ``θ ← θ − g / h`` (``h`` from the gradient's change under a unit shift of θ): the
    expected TD(λ) update carried out to the end, which a gradient method only approaches slowly.
    """
    policy, responses, rewards = _toy_problem()
    truth = _true_values(policy, rewards, gamma)
    prefixes = sorted(truth, key=lambda p: (len(p), p))
    index = {p: i for i, p in enumerate(prefixes)}
    dummy = len(prefixes)  # a constant 0 for positions that are never read

    ys = list(responses)
    batch = collate([Example([PROMPT, *y], len(y), rewards[y]) for y in ys], pad_id=0)
    width = batch.input_ids.shape[1]
    lookup = torch.full((len(ys), width, VOCAB) if head == "token" else (len(ys), width), dummy)
    for row, y in enumerate(ys):
        first = width - len(y)  # position of y_1; the prompt token sits just before it
        for t in range(len(y) + 1):
            if head == "token" and t < len(y):  # values[pos of y_t−1][a] = Q(y_<t, a) = V(y_<t + a)
                for a in ACTIONS:
                    lookup[row, first - 1 + t, a] = index[y[:t] + (a,)]
            elif head == "scalar" and t > 0:  # values[pos of y_t] = V(y_≤t)
                lookup[row, first - 1 + t] = index[y[:t]]
    weights = batch.response_mask * torch.tensor([responses[y] for y in ys], dtype=torch.float64)[:, None]

    def loss_gradient(table, targets):
        table = table.clone().requires_grad_()
        q = response_values(torch.cat([table, torch.zeros(1, dtype=table.dtype)])[lookup],
                            batch.input_ids, batch.response_mask)
        value_loss(q, targets, weights).backward()
        return table.grad

    table = torch.zeros(len(prefixes), dtype=torch.float64)
    errors = []
    for _ in range(MAX_LEN + 3):
        q_bar = response_values(torch.cat([table, torch.zeros(1, dtype=table.dtype)])[lookup],
                                batch.input_ids, batch.response_mask)
        targets = lambda_returns(q_bar, batch.rewards.double(), batch.response_mask, gamma, lam)
        gradient = loss_gradient(table, targets)
        table = table - gradient / (loss_gradient(table + 1, targets) - gradient)
        errors.append(max(abs(table[index[p]].item() - v) for p, v in truth.items()))
    assert errors[-1] < 1e-6  # the rewards went through float32
    if lam < 1:  # bootstrapped targets need several sweeps: the error really shrinks to 0
        assert errors[0] > 1e-2
