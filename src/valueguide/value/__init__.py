"""The explicit value function Q_phi (stage fit_value): model, TD(lambda) targets, fitting, diagnostics."""

from .model import (
    Example,
    ValueBatch,
    ValueModel,
    ValueOutput,
    collate,
    encode_prompt,
    predict_last,
    response_values,
    value_examples,
)
from .targets import lambda_returns, last_positions

__all__ = [
    "Example", "ValueBatch", "ValueModel", "ValueOutput", "collate", "encode_prompt", "lambda_returns",
    "last_positions", "predict_last", "response_values", "value_examples",
]
