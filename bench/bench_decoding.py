"""Speed of the guided decoders against plain batched sampling, on tiny random models.

The small pair and the value backbone are the tiny world's ``gpt2-small`` (vocabulary 600, 2
layers, width 64); the guided model takes each of several shapes (``SHAPES``), because what
guidance costs is set by how much a small step costs next to a large one: the tiny world's own
``gpt2-large`` (3 layers, width 64, barely larger than the small model), a 4-layer width-128 model,
and a 6-layer width-112 model shaped like gpt2-large next to gpt2 (3x the depth, about 1.7x the
width), the ratio of the paper's IMDB and TL;DR runs. Each method is timed against plain
sampling of the same number of rows, timed back to back, in CPU time per sampled token: "x plain"
is the ratio of the least disturbed run of each (this machine is shared, and a disturbance only
ever adds time), "median" the median of the back-to-back ratios; and its cached run against a
naive one that re-encodes every sequence at every step (``use_cache=False``). The last line gives
the step-cost floors: ``1 + cost(small steps) / cost(large step)``, which no decoder that runs
the small models at every step beats by more than its own loop overhead.

    python bench/bench_decoding.py [--shapes world,4x128,paper] [--tokens 40] [--repeats 10] [--out bench.json]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from valueguide import heap
from valueguide.decoding import Member, Sampling, build_decoder
from valueguide.decoding.paired import pair_models
from valueguide.value.model import ValueModel

VOCAB = 600
CBS = {"scorer": "explicit", "W": 4, "K": 4, "L": 5, "beta": 1.0}
# name: (method, rows per prompt, prompts, baseline name, naive variant too)
CASES = {
    "plain x1": ({}, 1, 1, None, False),
    "plain x16": ({}, 1, 16, None, False),
    "eft": ({"token": {"kind": "implicit", "w": 1.0}}, 1, 1, "plain x1", True),
    "vas token k20": ({"token": {"kind": "explicit", "beta": 1.0, "top_k": 20}}, 1, 1, "plain x1", True),
    "vas scalar k20": ({"token": {"kind": "explicit", "beta": 1.0, "top_k": 20}}, 1, 1, "plain x1", True),
    "cbs explicit 4,4,5": ({"chunk": CBS}, 16, 1, "plain x16", True),
    "ivg 4,4,5": ({"token": {"kind": "implicit", "w": 1.0}, "chunk": CBS}, 16, 1, "plain x16", True),
    "bon 16": ({"chunk": {"scorer": "explicit", "W": 1, "K": 16, "L": None}}, 16, 1, "plain x16", True),
}
BASELINES = {"hf generate x1": "plain x1", "hf generate x16": "plain x16"}
# guided model shape: (layers, width, heads)
SHAPES = {"world": (3, 64, 4), "4x128": (4, 128, 4), "paper": (6, 112, 4)}
TARGETS = {"eft": 1.5, "vas token k20": 1.5, "vas scalar k20": 2.5, "cbs explicit 4,4,5": 1.2, "ivg 4,4,5": 1.6}


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(VOCAB - 2)}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>")
    tok.padding_side = "left"
    return tok


def gpt2(layers: int, width: int, heads: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=width, n_layer=layers, n_head=heads,
                     bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def value_model(head: str, seed: int) -> ValueModel:
    vm = ValueModel(gpt2(2, 64, 2, seed).transformer, head, {"template": "{prompt}"})
    torch.nn.init.normal_(vm.head.weight, std=0.5)
    return vm.eval()


def members(head: str, shape: tuple[int, int, int]) -> dict[str, Member]:
    tok = tokenizer()
    return {"guided": Member(gpt2(*shape, seed=1), tok), "tuned": Member(gpt2(2, 64, 2, seed=2), tok),
            "untuned": Member(gpt2(2, 64, 2, seed=3), tok), "value": Member(value_model(head, 4), tok, kind="value")}


def run(decoder, prompts: list[str]) -> tuple[float, object]:
    """CPU seconds of this process (robust to other jobs on a shared machine) and the result."""
    gc.collect()
    gc.disable()  # as timeit does: a collection landing in one run but not its partner is noise
    try:
        began = time.process_time()
        result = decoder.generate(prompts, torch.Generator().manual_seed(0))
        seconds = time.process_time() - began
    finally:
        gc.enable()
    return seconds, result


class HFGenerate:
    """transformers' own ``generate`` (KV-cached sampling), as a reference for plain sampling."""

    def __init__(self, member: Member, max_new_tokens: int):
        self.member, self.max_new_tokens = member, max_new_tokens

    def generate(self, prompts, generator):
        enc = self.member.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        n = self.max_new_tokens
        self.member.model.generate(**enc, do_sample=True, temperature=0.7, top_k=None, max_new_tokens=n,
                                   min_new_tokens=n, pad_token_id=0)
        return SimpleNamespace(sampled=n * len(prompts), meter=SimpleNamespace(tokens={}, candidates={}))


@torch.no_grad()
def step_cost_ratio(large, small, n_rows: int, small_rows: int, steps: int = 200) -> float:
    """CPU cost of a one-token cached forward pass of ``small`` on ``small_rows`` rows over that of
    ``large`` on ``n_rows`` rows, the two interleaved step by step so both see the same load."""
    caches = [DynamicCache(config=m.config) for m in (large, small)]
    rows = (n_rows, small_rows)
    for model, cache, n in zip((large, small), caches, rows):
        model(input_ids=torch.full((n, 12), 5), position_ids=torch.arange(12).expand(n, -1), cache=cache)
    spent = [0.0, 0.0]
    for _ in range(steps):
        for i, (model, cache, n) in enumerate(zip((large, small), caches, rows)):
            began = time.process_time()
            model(input_ids=torch.full((n, 1), 5), position_ids=torch.full((n, 1), 12), cache=cache)
            spent[i] += time.process_time() - began
            cache.crop(-1)
    return spent[1] / spent[0]


def floors(by_role: dict[str, Member]) -> dict:
    """What no decoder running the small models at every step can beat: ``1 + cost(small steps) /
    cost(large step)``, with the tuned and untuned models run one after the other or paired."""
    large, small = by_role["guided"].model, by_role["tuned"].model
    paired = pair_models(copy.deepcopy(by_role["tuned"].model), copy.deepcopy(by_role["untuned"].model))
    small_x1 = step_cost_ratio(large, small, 1, 1)
    paired_x1, paired_x16 = step_cost_ratio(large, paired, 1, 2), step_cost_ratio(large, paired, 16, 32)
    return {"small/large step x1": small_x1, "paired/large step x1": paired_x1,
            "paired/large step x16": paired_x16, "vas token floor": 1 + small_x1,
            "eft floor, separate": 1 + 2 * small_x1, "eft floor, paired": 1 + paired_x1,
            "ivg floor, paired, without the value model": 1 + paired_x16}


def bench_shape(shape: tuple[int, int, int], args) -> tuple[list[dict], dict]:
    """Every case of ``CASES`` with a guided model of this shape: table rows and step-cost floors."""
    by_head = {head: members(head, shape) for head in ("token", "scalar")}
    prompt = " ".join(f"w{i}" for i in range(3, 15))
    sampling = Sampling(temperature=0.7)

    runs = {("hf generate x1", True): (HFGenerate(by_head["token"]["guided"], args.tokens), [prompt]),
            ("hf generate x16", True): (HFGenerate(by_head["token"]["guided"], args.tokens), [prompt] * 16)}
    for name, (method, _, n_prompts, _, naive) in CASES.items():
        head = "scalar" if "scalar" in name else "token"
        for cached in (True, False) if naive else (True,):
            decoder = build_decoder(method, by_head[head], sampling=sampling, max_new_tokens=args.tokens,
                                    use_cache=cached)
            runs[(name, cached)] = (decoder, [prompt] * n_prompts)
    baseline = {key: BASELINES.get(key[0], CASES.get(key[0], [None] * 4)[3]) for key in runs}
    prompt_tokens = len(by_head["token"]["value"].encode_prompt(prompt))
    return time_runs(runs, baseline, args, prompt_tokens, TARGETS), floors(by_head["token"])


def time_runs(runs: dict, baseline: dict, args, prompt_tokens: int, targets: dict) -> list[dict]:
    """Time every run against its baseline (plain sampling of as many rows), back to back, and
    return one table row per run: ratios of the least disturbed runs and the median ratio, and the
    tokens the value model read per token sampled (all of them, and the response part only)."""
    heap.keep_freed_memory()  # as every pipeline job does (valueguide.cli)
    heap.settle()  # as the generate stage does once its models are loaded
    timings, ratios = {key: [] for key in runs}, {key: [] for key in runs}
    partner = {key: [] for key in runs}  # per-token times of the baseline runs timed right before key
    for round_ in range(args.repeats + 1):  # the first round warms up and is dropped
        for key, (decoder, prompts) in runs.items():
            if not key[1] and round_ > args.naive_repeats:
                continue  # the naive reference is slow and only needs a rough ratio
            base = baseline[key]
            if base:  # time the baseline right before, so the pair sees the same machine load
                timings[(base, True)].append(run(*runs[(base, True)]))
            timings[key].append(run(decoder, prompts))
            if base and round_:
                (s_base, r_base), (s_key, r_key) = timings[(base, True)][-1], timings[key][-1]
                ratios[key].append((s_key / r_key.sampled) / (s_base / r_base.sampled))
                partner[key].append(s_base / r_base.sampled)
    rows = []
    best = {key: min(s / r.sampled for s, r in results[1:]) for key, results in timings.items()}
    best_partner = {key: min(times) for key, times in partner.items() if times}
    for (name, cached), results in timings.items():
        seconds = min(s for s, _ in results[1:])  # the least disturbed repeat
        result = results[-1][1]
        sampled, meter = result.sampled, result.meter
        value_tokens = meter.tokens.get("value", 0)
        base = baseline[(name, cached)]
        n_prompts = len(runs[(name, cached)][1])
        response_tokens = max(value_tokens - prompt_tokens * n_prompts, 0) if cached else value_tokens
        pairs = ratios[(name, cached)]
        rows.append({"method": name if cached else f"{name} (naive)", "tokens_per_s": sampled / seconds,
                     "seconds": seconds, "sampled": sampled, "value_tokens_per_sampled": value_tokens / sampled,
                     "value_response_tokens_per_sampled": response_tokens / sampled,
                     "tokens_per_sampled": {r: t / sampled for r, t in sorted(meter.tokens.items()) if r != "guided"},
                     "candidates_per_sampled": {r: t / sampled for r, t in sorted(meter.candidates.items())},
                     "baseline": base, "ratio": best[(name, cached)] / best_partner[(name, cached)] if base else 1.0,
                     "median_ratio": statistics.median(pairs) if pairs else 1.0,
                     "target": targets.get(name) if cached else None})
    return rows


def print_table(name: str, shape: tuple[int, int, int], rows: list[dict], cost: dict) -> None:
    layers, width, _ = shape
    print(f"\nguided model {name}: {layers} layers, width {width} (small pair and value: 2 layers, width 64)")
    print(f"{'method':28s} {'tok/s':>7s} {'x plain':>7s} {'median':>7s} {'target':>6s} {'value tok/tok':>13s} "
          f"{'(response only)':>15s}  baseline")
    for r in rows:
        target = f"{r['target']:.1f}" if r["target"] else "-"
        print(f"{r['method']:28s} {r['tokens_per_s']:7.0f} {r['ratio']:7.2f} {r['median_ratio']:7.2f} {target:>6s} "
              f"{r['value_tokens_per_sampled']:13.2f} {r['value_response_tokens_per_sampled']:15.2f}  "
              f"{r['baseline'] or '-'}")
    print("step costs and floors: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"guided model shapes, of {list(SHAPES)}")
    parser.add_argument("--tokens", type=int, default=40, help="max new tokens per row")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per method (plus a warm-up)")
    parser.add_argument("--naive-repeats", type=int, default=2, help="timed runs of each naive reference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the tables as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.shapes.split(",")
    unknown = set(names) - set(SHAPES)
    if unknown:
        parser.error(f"unknown shape(s) {sorted(unknown)}; choose from {list(SHAPES)}")
    report = {}
    for name in names:
        rows, cost = bench_shape(SHAPES[name], args)
        print_table(name, SHAPES[name], rows, cost)
        report[name] = {"guided_shape": SHAPES[name], "methods": rows, "forward_costs": cost}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
