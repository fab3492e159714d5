"""Stage generate: one (large model, method) pair over the test prompts.

Loads only what the method needs, checks vocabularies before the first token, and writes
``generations/{model}/{method}.parquet`` with the cost of every row (its share of its batch) and its KL
from the frozen model (``kl``: nats, the per-token KLs summed along the response, docs/ALGORITHMS.md §5.4).
"""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
import torch
from tqdm import tqdm

from . import heap
from .artifacts import read_parquet, write_parquet
from .config import world_dir as world_dir_of
from .decoding.method import build_decoder
from .decoding.method_spec import Method
from .decoding.sampler import Sampling
from .decoding.search import Member
from .decoding.shards import shard_rows
from .decoding.streams import VALUE
from .models import load_causal_lm, load_options, load_own_tokenizer, load_tokenizer
from .reward import RewardModel
from .seeding import derive_seed
from .value.classifier import load_classifier
from .value.source import load_value

log = logging.getLogger(__name__)

def _members(config: dict, model_name: str, method: Method, world_dir, value_path, tuned_path, finetuned_path,
             options, classifier_path=None):
    entry = config["models"][model_name]
    frozen = Member(load_causal_lm(entry["path"], world_dir, options), load_tokenizer(entry["path"], world_dir, options),
                    entry["template"])
    members = {"guided": frozen}
    if method.finetuned is not None:
        if finetuned_path is None:
            raise ValueError(f"this method samples the model tuned by finetune entry {method.finetuned!r}: pass "
                             "finetuned_path (stage finetune's output for this model)")
        # the tuned copy is guided; the frozen model stays as the reference the KL is measured from
        members = {"guided": Member(load_causal_lm(str(finetuned_path), world_dir, options),
                                    load_own_tokenizer(str(finetuned_path), entry["path"], world_dir, options),
                                    entry["template"]),
                   "reference": frozen}
    roles = method.roles()
    if roles & {"tuned", "untuned"}:
        fit = config["fit_implicit"]
        small = config["models"][fit["untuned"]]
        tuned = str(tuned_path) if tuned_path is not None else (fit.get("tuned") if fit.get("mode") == "pretrained" else None)
        if tuned is None:
            raise ValueError("this method needs the tuned small model: pass tuned_path (stage fit_implicit's output)")
        members["untuned"] = Member(load_causal_lm(small["path"], world_dir, options),
                                    load_tokenizer(small["path"], world_dir, options), small["template"])
        members["tuned"] = Member(load_causal_lm(tuned, world_dir, options),
                                  load_own_tokenizer(tuned, small["path"], world_dir, options), small["template"])
    if "value" in roles:
        value, tokenizer = load_value(config, value_path, world_dir, options)
        template = value.meta.get("template", config["fit_value"]["template"])
        members["value"] = Member(value, tokenizer, template, VALUE)
    if "classifier" in roles:
        fit = config["fit_classifier"]
        classifier, tokenizer = load_classifier(classifier_path, fit["backbone"], world_dir, options)
        members["classifier"] = Member(classifier, tokenizer, classifier.meta.get("template", fit["template"]), VALUE)
    return members


def run_generate(config: dict, model_name: str, method_name: str, jobs: list[tuple[str, str]], world_dir=None,
                 value_path=None, tuned_path=None, finetuned_path=None, shard: tuple[int, int] = (0, 1),
                 classifier_path=None) -> dict[str, pd.DataFrame]:
    """Generate with ``config["generate"]["methods"][method_name]`` for each (prompts, output) job.

    Models load once for all jobs (e.g. the test split and the AlpacaEval instructions). A method with
    ``finetuned`` guides the model in ``finetuned_path`` (stage finetune's), with the frozen model as
    the decoder's ``reference`` member.
    ``batch_size`` counts prompts: each batch decodes ``batch_size * W * K`` rows together. Batch
    ``b`` draws from a generator seeded ``derive_seed(seed, "generate", b)``, shared by all methods
    (common random numbers make method comparisons less noisy). ``shard=(i, n)`` generates only the
    i-th of n contiguous runs of whole batches, keeping their global batch indices, so the merged
    shards equal the unsharded output (``decoding.shards``).
    """
    gen = config["generate"]
    if method_name not in gen["methods"]:
        raise ValueError(f"unknown method {method_name!r}; configured: {sorted(gen['methods'])}")
    method = Method.from_config(gen["methods"][method_name] or {})
    if world_dir is None and config.get("world"):
        world_dir = world_dir_of({"results_dir": "results", **config})
    prompt_sets = []
    for prompts_path, out_path in jobs:
        prompts = read_parquet(prompts_path, required=["prompt_id", "prompt"])
        if prompts.empty:
            raise ValueError(f"{prompts_path} holds no prompts to generate for")
        rows, first_batch = shard_rows(len(prompts), gen["batch_size"], *shard)
        prompt_sets.append((prompts.iloc[rows], first_batch, out_path))
    options = load_options(config)
    members = _members(config, model_name, method, world_dir, value_path, tuned_path, finetuned_path, options,
                       classifier_path)
    reward = RewardModel.load(config["reward_model"], world_dir, options) if "reward" in method.roles() else None
    decoder = build_decoder(
        method, members, reward=reward.score if reward else None, reward_tokenizer=reward.tokenizer if reward else None,
        sampling=Sampling(gen["temperature"], gen["top_k"], gen["top_p"]),
        max_new_tokens=gen["max_new_tokens"], stop=gen.get("stop") or ())
    heap.settle()
    written = {}
    for prompts, first_batch, out_path in prompt_sets:
        df = _generate_all(decoder, prompts, gen["batch_size"], config["seed"], f"{model_name}/{method_name}",
                           first_batch)
        write_parquet(df, out_path)
        log.info("%s/%s: %d generations, mean %.1f tokens -> %s", model_name, method_name, len(df),
                 df.n_tokens.mean(), out_path)
        written[str(out_path)] = df
    return written


def _generate_all(decoder, prompts: pd.DataFrame, size: int, seed: int, desc: str,
                  first_batch: int = 0) -> pd.DataFrame:
    records = []
    starts = range(0, len(prompts), size)
    for b, start in enumerate(tqdm(starts, desc=f"generate {desc}", mininterval=2), start=first_batch):
        chunk = prompts.iloc[start:start + size]
        generator = torch.Generator().manual_seed(derive_seed(seed, "generate", b))
        began = time.perf_counter()
        result = decoder.generate(list(chunk.prompt), generator)
        share = 1.0 / len(chunk)
        wall = (time.perf_counter() - began) * share
        passes = json.dumps({k: round(v * share, 3) for k, v in sorted(result.meter.passes.items())})
        tokens = json.dumps({k: round(v * share, 3) for k, v in sorted(result.meter.tokens.items())})
        candidates = json.dumps({k: round(v * share, 3) for k, v in sorted(result.meter.candidates.items())})
        for pid, prompt, g in zip(chunk.prompt_id, chunk.prompt, result.generations):
            records.append({"prompt_id": int(pid), "prompt": prompt, "output": g.text, "output_ids": g.ids,
                            "n_tokens": len(g.ids), "forward_passes": passes, "tokens_encoded": tokens,
                            "candidate_tokens": candidates, "wall_time": wall, "kl": g.kl})
    return pd.DataFrame(records)
