"""Stage sample: responses of the frozen base policy, scored by the reward model.

This is the only data the value fits see (the VAS premise): prompt, response text and token ids,
reward, and the log-prob of each response token under the sampling distribution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import read_parquet, write_parquet
from .models import load_causal_lm, load_options, load_tokenizer
from .reward import RewardModel
from .seeding import derive_seed
from .templates import render_for
from .texts import decode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, section: dict) -> "SamplingParams":
        return cls(temperature=section["temperature"], top_k=section["top_k"], top_p=section["top_p"],
                   max_new_tokens=section["max_new_tokens"], stop=list(section.get("stop", [])))


@dataclass
class Response:
    ids: list[int]
    logprobs: list[float]
    finished: bool


def cut_response(ids: list[int], logprobs: list[float], tokenizer, eos_id: int, stop: list[str]) -> Response:
    """Cut a generated row after its first EOS, or after the token that completes a stop string."""
    end, finished = len(ids), False
    if eos_id in ids:
        end, finished = ids.index(eos_id) + 1, True
    if stop:
        for t in range(end):
            text = decode(tokenizer, ids[: t + 1])
            if any(s in text for s in stop):
                end, finished = t + 1, True
                break
    return Response(ids[:end], logprobs[:end], finished)


@torch.no_grad()
def sample_batch(model, tokenizer, texts: list[str], params: SamplingParams, seed: int) -> list[Response]:
    """Sample one response per rendered prompt with a KV-cached ``generate``; log-probs are those of
    the processed (tempered, filtered) distribution the tokens were drawn from."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    torch.manual_seed(seed)
    out = model.generate(
        **enc, do_sample=True, temperature=params.temperature, top_k=params.top_k or None,
        top_p=params.top_p, max_new_tokens=params.max_new_tokens, output_scores=True,
        return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    new_ids = out.sequences[:, enc["input_ids"].shape[1]:]
    return [
        cut_response(row.tolist(), lp.float().tolist(), tokenizer, tokenizer.eos_token_id, params.stop)
        for row, lp in zip(new_ids.cpu(), logprobs.cpu())
    ]


def run_sample(config: dict, prompts_path: str | Path, out_path: str | Path, world_dir=None) -> pd.DataFrame:
    cfg = config["sample"]
    policy = config["models"][cfg["policy"]]
    prompts = read_parquet(prompts_path, required=["prompt_id", "prompt"])
    if prompts.empty:
        raise ValueError(f"{prompts_path} holds no prompts")
    options = load_options(config)
    # Load everything before the long loop, so a missing model fails fast.
    tokenizer = load_tokenizer(policy["path"], world_dir, options)
    model = load_causal_lm(policy["path"], world_dir, options)
    reward_model = RewardModel.load(config["reward_model"], world_dir, options)
    params = SamplingParams.from_config(cfg)

    rows = [(int(pid), prompt, k) for pid, prompt in zip(prompts.prompt_id, prompts.prompt) for k in range(cfg["n"])]
    records = []
    batches = range(0, len(rows), cfg["batch_size"])
    for b, start in enumerate(tqdm(batches, desc=f"sample {cfg['policy']}", mininterval=2)):
        chunk = rows[start:start + cfg["batch_size"]]
        texts = [render_for(tokenizer, policy["template"], prompt) for _, prompt, _ in chunk]
        responses = sample_batch(model, tokenizer, texts, params, derive_seed(config["seed"], "sample", b))
        for (pid, prompt, k), resp in zip(chunk, responses):
            records.append({"prompt_id": pid, "prompt": prompt, "sample_idx": k,
                            "response": decode(tokenizer, resp.ids),
                            "response_ids": resp.ids, "finished": resp.finished, "logprobs": resp.logprobs})
    df = pd.DataFrame(records)
    df["reward"] = reward_model.score([p + r for p, r in zip(df.prompt, df.response)])
    write_parquet(df, out_path)
    log.info("sampled %d responses; reward mean %.3f std %.3f", len(df), df.reward.mean(), df.reward.std())
    return df
