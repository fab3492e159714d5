"""TD(lambda) targets for the value regression (docs/ALGORITHMS.md §2.3).

Layout convention: a batch is ``[B, T]`` and ``mask`` marks each row's real response tokens; a row's
trajectory is its masked positions in order, wherever they sit (left-aligned, right-aligned after
left padding, or after masked prompt tokens). Masked positions are skipped by the recursion, so
padding never leaks into real positions, and their targets are 0. The terminal reward sits at the
last real position of each row (the EOS token when the response ended with it).
"""

from __future__ import annotations

import torch


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real position of each row ([B]); a row without one raises."""
    mask = mask.bool()
    if not mask.any(-1).all():
        raise ValueError("every row needs at least one response token")
    positions = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(mask, positions, -1).max(-1).values


def lambda_returns(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    """Targets ``G_t = q̄_t + A_t`` with ``A_t = δ_t + γλ A_{t+1}`` and ``δ_t = r_t + γ q̄_{t+1} − q̄_t``.

    ``values`` [B, T] are the current predictions q_t (treated as constants), ``rewards`` [B] the
    terminal rewards. ``q̄_{T+1} = A_{T+1} = 0`` past each row's last real token.
    """
    mask = mask.bool()
    values = values.detach()
    terminal = torch.zeros_like(mask)
    terminal[torch.arange(mask.shape[0], device=mask.device), last_positions(mask)] = True
    step_rewards = torch.where(terminal, rewards.to(values.dtype)[:, None], 0.0)

    returns = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        real = mask[:, t]
        delta = step_rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        returns[:, t] = torch.where(real, values[:, t] + advantage, 0.0)
        next_value = torch.where(real, values[:, t], next_value)
        next_advantage = torch.where(real, advantage, next_advantage)
    return returns
