"""Speed of guidance across vocabularies, against plain sampling and against full re-encoding.

The guided model (``--shape``, 4 layers of width 128 by default, as in ``bench_decoding.py``) speaks a
byte-level BPE like GPT-2's; the small pair and the value model (2 layers, width 64) speak a
SentencePiece-style BPE with byte fallback like Llama-2's and Mistral's. Both tokenizers (600
entries, plus 256 byte tokens on the SentencePiece side) are trained on the tiny world's review
texts, so their token boundaries often disagree (``tests/helpers/toy_tokenizers.py``). The guided model is
pretrained briefly on those texts (about a minute), so that it writes review-like text, as a real
guided model would: what its top-k candidates cost to re-tokenise depends on how text-like they
are. Special tokens are kept off, so every row runs to the token limit.

Every method runs twice: incrementally (``TextStream``: each guiding model re-tokenises a short
tail and feeds what changed) and with full re-encoding (``use_cache=False``: every read tokenises
and encodes each row, and each candidate, from the start, as the text scorers used to). Ratios are
CPU time per sampled token over plain sampling of the same number of rows, timed back to back (see
``bench_decoding.py``). "fed/tok" is the tokens each guiding model encodes per token sampled
(candidate tokens of token-level guidance apart, "cand/tok"); "own/tok" how many of its own tokens
the same texts take per guided token, the floor for "fed/tok".

With ``--parts``, each chosen method is then run again with a timer around the guided model's
steps, the small models' passes, the planning of what to feed and read, and the reading of
scores (``step_parts.py``): CPU milliseconds of the least disturbed of five generations, inclusive,
and as a multiple of plain sampling's whole generation (timed right before it), to show where a
method's cost over plain sampling goes.

    python bench/bench_cross_vocabulary.py [--shape 4x128] [--tokens 40] [--repeats 10] [--parts] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers: the toy tokenizers
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decoding import SHAPES, time_runs  # noqa: E402
from step_parts import time_parts  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from tests.helpers.toy_tokenizers import train_byte_bpe, train_sentencepiece_bpe  # noqa: E402

from valueguide.decoding import Member, Sampling, build_decoder  # noqa: E402
from valueguide.decoding import aligned, search, streams  # noqa: E402
from valueguide.value.model import ValueModel  # noqa: E402
from valueguide.world import lm as world_lm  # noqa: E402
from valueguide.world.corpus import make_reviews  # noqa: E402

K = 20
CBS = {"scorer": "explicit", "W": 4, "K": 4, "L": 5, "beta": 1.0}
EFT = {"kind": "implicit", "w": 1.0, "top_k": K}
# name: (method, prompts, baseline): CBS, IVG and BoN decode 16 rows for their one prompt
CASES = {
    "plain x1": ({}, 1, None),
    "plain x16": ({}, 16, None),
    "cbs explicit 4,4,5": ({"chunk": CBS}, 1, "plain x16"),
    "cbs implicit 4,4,5": ({"chunk": {**CBS, "scorer": "implicit"}}, 1, "plain x16"),
    "eft k20": ({"token": EFT}, 1, "plain x1"),
    "vas token k20": ({"token": {"kind": "explicit", "beta": 1.0, "top_k": K}}, 1, "plain x1"),
    "vas scalar k20": ({"token": {"kind": "explicit", "beta": 1.0, "top_k": K}}, 1, "plain x1"),
    "ivg 4,4,5 k20": ({"token": EFT, "chunk": CBS}, 1, "plain x16"),
    "bon 16": ({"chunk": {"scorer": "explicit", "W": 1, "K": 16, "L": None}}, 1, "plain x16"),
}
TARGETS = {"cbs explicit 4,4,5": 1.3, "eft k20": 2.5, "ivg 4,4,5 k20": 2.5}
TEMPLATE = "Review: {prompt}"
# what --parts times (inclusive: "feeding" holds "small models' passes")
PARTS = {"guided model's steps": (streams.Stream, "sync"),
         "scores of candidates (token level)": (aligned.TextStream, "candidate_scores"),
         "scores of rows (chunk level)": (aligned.TextStream, "response_scores"),
         "re-tokenising the rows' new text": (aligned.TextStream, "_plan"),
         "planning what candidates feed and read": (aligned.TextStream, "_candidates"),
         "feeding (pass, masks, kept outputs)": (aligned.Feed, "advance"),
         "small models' passes": (aligned.Feed, "_forward"),
         "reading candidates' scores": (aligned.TextStream, "_candidate_values"),
         "selecting CBS rows": (search.Rows, "select")}
PRETRAIN = {"steps": 150, "batch_size": 32, "lr": 3e-3}  # the tiny world's pretraining


def gpt2(vocab: int, layers: int, width: int, heads: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=512, n_embd=width, n_layer=layers, n_head=heads,
                     bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def pretrained(model: GPT2LMHeadModel, tokenizer, texts: list[str]) -> GPT2LMHeadModel:
    """``model`` after the tiny world's pretraining on ``texts``, special tokens kept off."""
    blocks = world_lm.pack([tokenizer(t).input_ids for t in texts], 64)
    world_lm.train(model.train(), world_lm.lm_loss(blocks), blocks, PRETRAIN, seed=1, desc="pretrain the guided model")
    bias = torch.zeros(len(tokenizer))
    bias[tokenizer.all_special_ids] = -30.0
    head = torch.nn.Linear(model.lm_head.in_features, len(tokenizer), bias=True)
    head.weight, head.bias = model.lm_head.weight, torch.nn.Parameter(bias)
    model.lm_head = head
    return model.eval()


def world(shape: tuple[int, int, int]):
    texts = [r.text for r in make_reviews(3000, 0)]
    guided_tok = train_byte_bpe(texts, 600)
    small_tok = train_sentencepiece_bpe(texts, 600 + 256 + 3, alphabet=100)  # ASCII whole, as in Llama-2
    guided = pretrained(gpt2(len(guided_tok), *shape, seed=1), guided_tok, texts)
    by_head = {}
    for head in ("token", "scalar"):
        value = ValueModel(gpt2(len(small_tok), 2, 64, 2, seed=4).transformer, head, {"template": TEMPLATE})
        torch.nn.init.normal_(value.head.weight, std=0.5)
        by_head[head] = {"guided": Member(guided, guided_tok, TEMPLATE),
                         "tuned": Member(gpt2(len(small_tok), 2, 64, 2, seed=2), small_tok, TEMPLATE + "\n"),
                         "untuned": Member(gpt2(len(small_tok), 2, 64, 2, seed=3), small_tok, TEMPLATE + "\n"),
                         "value": Member(value.eval(), small_tok, TEMPLATE + "\n", kind="value")}
    prompt = " ".join(texts[1].split()[:10])
    return by_head, prompt, guided_tok, small_tok


def own_per_guided(guided_tok, small_tok, texts: list[str]) -> float:
    """Tokens of the small tokenizer per token of the guided one, over the same texts."""
    count = lambda tok: sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)  # noqa: E731
    return count(small_tok) / count(guided_tok)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4x128", choices=list(SHAPES), help="the guided model's shape")
    parser.add_argument("--tokens", type=int, default=40, help="max new tokens per row")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per method (plus a warm-up)")
    parser.add_argument("--naive-repeats", type=int, default=2, help="timed runs of each full re-encoding")
    parser.add_argument("--methods", help="comma-separated beginnings of method names, e.g. 'eft,ivg' "
                                          "(their baselines run too)")
    parser.add_argument("--parts", action="store_true", help="then time each method's parts (see above)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    by_head, prompt, guided_tok, small_tok = world(SHAPES[args.shape])
    sampling = Sampling(temperature=0.7)
    runs, baseline = {}, {}
    prefixes = args.methods.split(",") if args.methods else [""]
    chosen = {name for name in CASES if any(name.startswith(p.strip()) for p in prefixes)}
    if not chosen:
        parser.error(f"no method starts with any of {prefixes}; the methods are {list(CASES)}")
    chosen |= {CASES[name][2] for name in chosen if CASES[name][2]}
    for name, (method, prompts, base) in CASES.items():
        if name not in chosen:
            continue
        models = by_head["scalar" if "scalar" in name else "token"]
        for cached in (True, False) if base and args.naive_repeats else (True,):
            decoder = build_decoder(method, models, sampling=sampling, max_new_tokens=args.tokens, use_cache=cached)
            runs[(name, cached)] = (decoder, [prompt] * prompts)
            baseline[(name, cached)] = base
    rows = time_runs(runs, baseline, args, 0, TARGETS)
    plain, prompts = runs[("plain x16", True)]
    texts = [g.text for g in plain.generate(prompts, torch.Generator().manual_seed(0)).generations]
    granularity = own_per_guided(guided_tok, small_tok, texts)
    layers, width, _ = SHAPES[args.shape]
    print(f"\nacross vocabularies: guided {layers}x{width} on a byte-level BPE ({len(guided_tok)}); small pair and "
          f"value 2x64 on a SentencePiece-style BPE ({len(small_tok)}); own/tok {granularity:.2f}")
    print(f"{'method':32s} {'tok/s':>6s} {'x plain':>7s} {'median':>6s} {'target':>6s}  fed/tok (cand/tok)")
    for r in rows:
        target = f"{r['target']:.1f}" if r["target"] else "-"
        fed = ", ".join(f"{role} {v:.2f}" + (f" ({r['candidates_per_sampled'][role]:.2f})"
                                              if role in r["candidates_per_sampled"] else "")
                        for role, v in r["tokens_per_sampled"].items()) or "-"
        print(f"{r['method']:32s} {r['tokens_per_s']:6.0f} {r['ratio']:7.2f} {r['median_ratio']:6.2f} {target:>6s}  {fed}")
    report = {"shape": SHAPES[args.shape], "own_per_guided": granularity, "methods": rows}
    if args.parts:
        report["parts"] = print_parts(runs, baseline)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def print_parts(runs: dict, baseline: dict) -> dict:
    """``time_parts`` of every method run incrementally, in ms per generation and x plain (its
    baseline timed right before it, as in the table)."""
    out = {}
    for (name, cached), (decoder, prompts) in runs.items():
        base = baseline[(name, cached)]
        if not cached or not base:
            continue
        plain = time_parts(*runs[(base, True)], {})["total"]
        parts = time_parts(decoder, prompts, PARTS)
        out[name] = {"plain_ms": plain * 1e3, **{label: v * 1e3 for label, v in parts.items()}}
        print(f"\n{name}: CPU ms per generation (x {base}), inclusive")
        for label, seconds in [("total", parts["total"]), *((k, parts[k]) for k in PARTS if k in parts)]:
            print(f"  {label:42s} {seconds * 1e3:8.1f}  {seconds / plain:5.2f}")
        print(f"  {base:42s} {plain * 1e3:8.1f}  {1:5.2f}")
    return out


if __name__ == "__main__":
    main()
