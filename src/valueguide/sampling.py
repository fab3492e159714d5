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
from .decoding.sampler import Sampling, draw
from .decoding.streams import forward_args, positions
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
    """Sample one response per rendered prompt; log-probs are those of the processed (tempered,
    filtered) distribution the tokens were drawn from."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",  # continue at the right end
                    add_special_tokens=False)
    ids, logprobs = sample_ids(model, enc["input_ids"], enc["attention_mask"], params, params.max_new_tokens,
                               tokenizer.eos_token_id, torch.Generator().manual_seed(seed))
    return [cut_response(row.tolist(), lp.tolist(), tokenizer, tokenizer.eos_token_id, params.stop)
            for row, lp in zip(ids, logprobs)]


@torch.no_grad()
def sample_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
               max_new_tokens: int, eos: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """KV-cached sampling from left-padded rows: new token ids and their log-probs, [N, <= max_new_tokens]
    on the CPU; a row that emitted EOS is padded with EOS (log-prob 0), and the loop ends when all have.

    Draws by inverse CDF (``decoding.sampler``), not ``generate``'s ``torch.multinomial``, which on a
    CPU costs seconds per step over a 50,257-entry vocabulary. The prompt's pass keeps the logits of
    its last position only: all of them would be [N, T, V] (4 GB for 500 rows of 40 tokens).
    """
    mask = attention_mask.to(model.device)
    sampling = Sampling(params.temperature, params.top_k or 0, params.top_p)
    last_only = {"logits_to_keep": 1} if forward_args(model)[1] else {}
    out = model(input_ids=input_ids.to(model.device), attention_mask=mask, position_ids=positions(mask),
                use_cache=True, **last_only)
    done = torch.zeros(len(mask), dtype=torch.bool, device=model.device)
    tokens, logprobs = [], []
    for _ in range(max_new_tokens):
        probs = sampling.probs(out.logits[:, -1])
        token = draw(probs, generator)
        logprob = probs.gather(1, token[:, None])[:, 0].log()
        token = token.masked_fill(done, eos)
        tokens.append(token)
        logprobs.append(logprob.masked_fill(done, 0.0))
        done |= token == eos
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=positions(mask)[:, -1:],
                    past_key_values=out.past_key_values, use_cache=True)
    return torch.stack(tokens, 1).cpu(), torch.stack(logprobs, 1).float().cpu()


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
