"""The implicit value function: a DPO-tuned small model π_S* and its untuned π_S (stage fit_implicit).

ψ(s, a) = log π_S*(a|s) − log π_S(a|s); β·Σ_t ψ(s_t, y_t) is the DPO implicit reward of a response.
Importing this package does not import trl (only training needs it).
"""

from .dpo import run_fit_implicit, tuned_spec
from .pairs import build_pairs, split_prompts, train_and_heldout_pairs
from .score import encode_prompts, encode_responses, implicit_rewards, pairwise_accuracy, response_logprobs

__all__ = [
    "build_pairs", "encode_prompts", "encode_responses", "implicit_rewards", "pairwise_accuracy",
    "response_logprobs", "run_fit_implicit", "split_prompts", "train_and_heldout_pairs", "tuned_spec",
]
