"""Stage fit_value: regress the value model on TD(lambda) targets over the base policy's samples.

Targets are recomputed from the current model once per batch (with gradients stopped, in eval mode
so dropout does not perturb them), and the batch may be passed over ``passes_per_batch`` times.
The loop is shared with stage fit_classifier (FUDGE's prefix classifier), which fits another
``Objective``: a binary label on every response prefix.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..artifacts import ArtifactError, atomic_dir, read_json, read_parquet, write_json
from ..models import load_tokenizer
from ..models import load_options
from ..seeding import derive_seed, seed_everything
from .model import ValueBatch, ValueModel, collate, predict_last, value_examples
from .source import is_pretrained, load_value
from .targets import lambda_returns

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ["prompt_id", "prompt", "response", "response_ids", "reward"]


def value_loss(q: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``½ · weighted mean of (q − G)²``; ``weights`` is the response mask (or probabilities of
    enumerated responses, which turns the batch mean into an exact expectation)."""
    weights = weights.to(q.dtype)
    return 0.5 * (weights * (q - targets) ** 2).sum() / weights.sum()


def td_targets(value_model: ValueModel, batch: ValueBatch, gamma: float, lam: float) -> torch.Tensor:
    """TD(λ) targets from the current predictions. With λ = 1 they do not depend on the
    predictions (Monte-Carlo returns), so the extra forward pass is skipped."""
    if lam == 1:
        q_bar = torch.zeros(batch.input_ids.shape, device=batch.input_ids.device)
    else:
        with torch.no_grad(), _autocast(value_model.device):
            value_model.eval()
            q_bar = value_model.taken(batch.input_ids, batch.attention_mask).float() * batch.response_mask
            value_model.train()
    return lambda_returns(q_bar, batch.rewards, batch.response_mask, gamma, lam)


def prefix_labels(value_model: ValueModel, batch: ValueBatch, cfg: dict) -> torch.Tensor:
    """FUDGE's targets: every response prefix carries its sample's label (held in ``rewards``)."""
    return batch.rewards[:, None] * batch.response_mask


def prefix_bce_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean binary cross-entropy of the logits against the labels over the response positions."""
    weights = weights.to(logits.dtype)
    per_position = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (weights * per_position).sum() / weights.sum()


def terminal_mse(predicted: np.ndarray, rewards: np.ndarray) -> dict:
    return {"heldout_terminal_mse": float(np.mean((predicted - rewards) ** 2))}


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of ``logit > 0`` and the AUC (the fraction of (positive, negative) pairs ranked right, ties
    counting half) of the full responses' logits against their labels."""
    labels = labels.astype(bool)
    out = {"heldout_accuracy": float(np.mean((logits > 0) == labels))}
    positive, negative = logits[labels], logits[~labels]
    if len(positive) and len(negative):
        diff = positive[:, None] - negative[None, :]
        out["heldout_auc"] = float(np.mean((diff > 0) + 0.5 * (diff == 0)))
    return out


@dataclass(frozen=True)
class Objective:
    """What the shared loop fits: the stage (its progress bar and seed), per-position targets from the
    model and a batch, the loss against them, and the held-out metrics of the full responses' predictions."""

    stage: str
    targets: Callable[[ValueModel, ValueBatch, dict], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    heldout: Callable[[np.ndarray, np.ndarray], dict]


TD_LAMBDA = Objective("fit_value", lambda model, batch, cfg: td_targets(model, batch, cfg["gamma"], cfg["lam"]),
                      value_loss, terminal_mse)
PREFIX_LABELS = Objective("fit_classifier", prefix_labels, prefix_bce_loss, classification_metrics)


def split_by_prompt(samples: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out rows are all responses of a random ``fraction`` of the prompts (no prompt in both)."""
    prompt_ids = np.sort(samples.prompt_id.unique())
    rng = np.random.default_rng(derive_seed(seed, "fit_value", "heldout"))
    n_held = int(round(fraction * len(prompt_ids)))
    if fraction > 0 and len(prompt_ids) > 1:
        n_held = min(max(n_held, 1), len(prompt_ids) - 1)
    held = set(rng.choice(prompt_ids, size=n_held, replace=False).tolist())
    is_held = samples.prompt_id.isin(held)
    return samples[~is_held].reset_index(drop=True), samples[is_held].reset_index(drop=True)


def linear_schedule(total_steps: int, warmup_steps: int):
    """Linear warmup to the base learning rate, then linear decay towards 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _step(value_model: ValueModel, batch: ValueBatch, targets: torch.Tensor, optimizer, params,
          max_grad_norm: float | None, loss_of: Callable) -> float:
    with _autocast(value_model.device):
        q = value_model.taken(batch.input_ids, batch.attention_mask).float() * batch.response_mask
    loss = loss_of(q, targets, batch.response_mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return loss.item()


def fit_value(samples: pd.DataFrame, cfg: dict, tokenizer, value_model: ValueModel, seed: int,
              heldout: pd.DataFrame | None = None, policy_tokenizer=None, objective: Objective = TD_LAMBDA) -> dict:
    """Train ``value_model`` in place on ``samples`` (the sample stage's rows) with the ``fit_value``
    config section. Returns the history: per-step loss/lr and per-epoch held-out metrics (by default
    the terminal MSE, in training units, i.e. whitened when ``whiten_rewards``). ``objective``
    ``PREFIX_LABELS`` fits FUDGE's classifier instead, reading ``reward`` as the 0/1 label.

    ``policy_tokenizer`` (the sampling policy's) decides whether ``response_ids`` are reused or the
    response is re-tokenised (see ``to_value_ids``). With ``whiten_rewards`` the model is trained on
    standardised rewards and the scale is folded back into the head at the end; that is exact for
    γ = 1 (with γ < 1 the folded shift ignores discounting).
    """
    if samples.empty:
        raise ValueError(f"no samples to fit on ({objective.stage})")
    generator = seed_everything(derive_seed(seed, objective.stage))
    rewards = samples.reward.to_numpy(dtype=np.float64)
    mean, std = (rewards.mean(), rewards.std() or 1.0) if cfg.get("whiten_rewards") else (0.0, 1.0)

    def examples(df):
        return value_examples(df.prompt, df.response_ids, (df.reward.to_numpy(np.float64) - mean) / std,
                              tokenizer, cfg["template"], policy_tokenizer)

    train = examples(samples)
    held = examples(heldout) if heldout is not None and not heldout.empty else []
    batch_size, passes = cfg["batch_size"], cfg.get("passes_per_batch", 1)
    total = cfg["epochs"] * math.ceil(len(train) / batch_size) * passes
    params = [p for p in value_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], fused=True)  # one kernel: 6x faster on a CPU
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total, int(cfg.get("warmup_ratio", 0.0) * total)))
    device = value_model.device
    history = {"steps": [], "epochs": []}
    value_model.train()
    bar = tqdm(total=total, desc=objective.stage, mininterval=2)
    for epoch in range(cfg["epochs"]):
        order = torch.randperm(len(train), generator=generator).tolist()
        epoch_losses = []
        for start in range(0, len(train), batch_size):
            batch = collate([train[i] for i in order[start:start + batch_size]], tokenizer.pad_token_id, device)
            targets = objective.targets(value_model, batch, cfg)
            for _ in range(passes):
                loss = _step(value_model, batch, targets, optimizer, params, cfg.get("max_grad_norm"), objective.loss)
                history["steps"].append({"step": len(history["steps"]) + 1, "epoch": epoch + 1,
                                         "loss": loss, "lr": schedule.get_last_lr()[0]})
                schedule.step()
                epoch_losses.append(loss)
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses))}
        if held:
            predicted = predict_last(value_model, held, tokenizer.pad_token_id, batch_size)
            record.update(objective.heldout(predicted, np.array([e.reward for e in held])))
        history["epochs"].append(record)
        log.info("epoch %s", record)
    bar.close()
    value_model.eval()
    if cfg.get("whiten_rewards"):
        value_model.rescale(std, mean)
        value_model.meta["reward_whitening"] = {"mean": float(mean), "std": float(std)}
        history["reward_whitening"] = value_model.meta["reward_whitening"]
    return history


def plot_curve(history: dict, path: str | Path) -> None:
    """Training loss per step and held-out terminal MSE per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [s["step"] for s in history["steps"]]
    ax.plot(steps, [s["loss"] for s in history["steps"]], lw=0.6, alpha=0.6, label="train ½·MSE (TD(λ) targets)")
    epochs = [e for e in history["epochs"] if "heldout_terminal_mse" in e]
    if epochs:
        per_epoch = len(steps) / len(history["epochs"])
        ax.plot([e["epoch"] * per_epoch for e in epochs], [0.5 * e["heldout_terminal_mse"] for e in epochs],
                "o-", label="held-out ½·MSE of terminal value vs reward")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit_from_samples(config: dict, cfg: dict, samples: pd.DataFrame, head: str, meta: dict, world_dir=None,
                     objective: Objective = TD_LAMBDA):
    """A fresh model on ``cfg``'s backbone fitted on ``samples`` less the held-out prompts (the same prompts
    for every stage): ``(model, its tokenizer, history, metrics)``."""
    seed = config["seed"]
    options = load_options(config)
    # Full fine-tuning keeps float32 master weights (bf16 autocast on CUDA); LoRA keeps the base dtype.
    train_options = options if cfg.get("lora") else replace(options, dtype="float32")
    policy = config["models"][config["sample"]["policy"]]
    tokenizer = load_tokenizer(cfg["backbone"], world_dir, options)
    policy_tokenizer = load_tokenizer(policy["path"], world_dir, options)
    train, heldout = split_by_prompt(samples, cfg.get("heldout_fraction", 0.0), seed)

    seed_everything(derive_seed(seed, objective.stage, "init"))
    meta = {"template": cfg["template"], "policy": config["sample"]["policy"], **meta}
    model = ValueModel.from_backbone(cfg["backbone"], head, world_dir, train_options, meta, cfg.get("lora"))
    started = time.perf_counter()
    history = fit_value(train, cfg, tokenizer, model, seed, heldout, policy_tokenizer, objective)
    metrics = {"train_seconds": time.perf_counter() - started, "steps": len(history["steps"]),
               "final_train_loss": history["epochs"][-1]["train_loss"], "epochs": history["epochs"],
               "n_train_samples": len(train), "n_heldout_samples": len(heldout),
               "n_train_prompts": int(train.prompt_id.nunique()), "n_heldout_prompts": int(heldout.prompt_id.nunique())}
    return model, tokenizer, history, metrics


def read_samples(samples_path: str | Path) -> pd.DataFrame:
    samples = read_parquet(samples_path, required=REQUIRED_COLUMNS)
    if samples.empty:
        raise ArtifactError(f"{samples_path} holds no samples")
    return samples


def run_fit_value(config: dict, samples_path: str | Path, out_dir: str | Path, world_dir=None) -> dict:
    """The stage: fit on the samples (less the held-out prompts), write the model folder with
    ``metrics.json`` and ``curve.png`` in one atomic rename. Returns the metrics. The held-out
    diagnostics are a stage of their own (``run_diagnose_value``): their settings rerun no fit."""
    cfg = config["fit_value"]
    samples = read_samples(samples_path)
    model, tokenizer, history, metrics = fit_from_samples(
        config, cfg, samples, cfg["head"], {"gamma": cfg["gamma"], "lam": cfg["lam"]}, world_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        write_json(metrics, tmp / "metrics.json")
        plot_curve(history, tmp / "curve.png")
    log.info("fit_value: %s", {k: v for k, v in metrics.items() if k != "epochs"})
    return metrics


def run_diagnose_value(config: dict, samples_path: str | Path, value_dir: str | Path, out_path: str | Path,
                       world_dir=None) -> dict:
    """The stage: the fitted value on the held-out prompts (pairwise accuracy, error against Monte-Carlo
    rollouts of the base policy); writes the fit's metrics with the diagnostics added. A pretrained
    value (``value_dir`` None) has no fit's metrics: it is diagnosed on the same held-out prompts."""
    from .diagnostics import evaluate_value

    samples = read_parquet(samples_path, required=REQUIRED_COLUMNS)
    _, heldout = split_by_prompt(samples, config["fit_value"].get("heldout_fraction", 0.0), config["seed"])
    options = load_options(config)
    if is_pretrained(config):
        metrics = {"mode": "pretrained", "pretrained": config["fit_value"]["pretrained"]}
    else:
        metrics = read_json(Path(value_dir) / "metrics.json")
    if not heldout.empty:
        model, tokenizer = load_value(config, value_dir, world_dir, options)
        policy_tokenizer = load_tokenizer(config["models"][config["sample"]["policy"]]["path"], world_dir, options)
        metrics.update(evaluate_value(model, tokenizer, heldout, config, world_dir, policy_tokenizer, options))
    write_json(metrics, out_path)
    log.info("diagnose_value: %s", {k: v for k, v in metrics.items() if k != "epochs"})
    return metrics
