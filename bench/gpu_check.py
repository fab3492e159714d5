"""Every GPU number the project needs, from one short command: correctness on the device, throughput at
the paper's real shapes with random weights (nothing downloaded), and the plan's cost model against
what was measured. Each part writes JSON under ``--out`` (throughput as JSON lines, row by row) and
prints a table.

    make gpu-check               # python bench/gpu_check.py --device cuda
    make gpu-check DEVICE=cpu    # the same script at tiny shapes, as CI runs it so that it cannot rot
    python bench/gpu_check.py --show FOLDER   # the tables of a run's JSON files (bench/measured/*)

1. correctness: ``tests/test_device.py`` on the device (paired small models in bf16 against the two models,
   every cell of the method grid and cross-vocabulary IVG cached against uncached with a fixed seed);
2. throughput: gpt2 guiding gpt2-large and gpt2-xl shapes with every method at the IMDB settings, and a
   Llama-2-7B-shaped Tulu pair with a gpt2 value guiding a Mistral-7B shape (Mixtral's if memory allows)
   across the paper's real vocabularies at the AlpacaEval shapes: sampled tokens/s, time against plain
   sampling of the same rows, peak memory; prompt 128 tokens, 128 new (tiny: 16 and 16); each timed run
   is the second of two identical runs on a GPU;
3. the plan: ``valueguide.plan.pass_seconds`` against measured prefill and decode passes of each guided shape,
   and the pass overhead and effective bandwidth that the decode passes imply.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, MixtralConfig)

from valueguide import vocabularies
from valueguide.decoding import Member, Sampling, build_decoder
from valueguide.plan import HARDWARE, PASS_OVERHEAD, pass_seconds
from valueguide.value.model import ValueModel

ROOT = Path(__file__).resolve().parents[1]
# name: (vocabulary, architecture, layers, width, heads, kv heads, intermediate, experts), the model cards'
REAL = {
    "gpt2": ("gpt2", "gpt2", 12, 768, 12, 12, 3072, 0),
    "gpt2-large": ("gpt2", "gpt2", 36, 1280, 20, 20, 5120, 0),
    "gpt2-xl": ("gpt2", "gpt2", 48, 1600, 25, 25, 6400, 0),
    "llama-2-7b": ("llama2", "llama", 32, 4096, 32, 32, 11008, 0),
    "mistral-7b": ("mistral", "mistral", 32, 4096, 32, 8, 14336, 0),
    "mixtral-8x7b": ("mistral", "mixtral", 32, 4096, 32, 8, 14336, 8),
}
TINY = {  # the same models at CPU sizes, on the same real vocabularies
    "gpt2": ("gpt2", "gpt2", 2, 64, 2, 2, 256, 0),
    "gpt2-large": ("gpt2", "gpt2", 3, 96, 4, 4, 384, 0),
    "gpt2-xl": ("gpt2", "gpt2", 4, 128, 4, 4, 512, 0),
    "llama-2-7b": ("llama2", "llama", 2, 64, 2, 2, 128, 0),
    "mistral-7b": ("mistral", "mistral", 2, 96, 4, 2, 192, 0),
    "mixtral-8x7b": ("mistral", "mixtral", 2, 64, 4, 2, 128, 4),
}
CBS445 = {"W": 4, "K": 4, "L": 5, "beta": 1.0}
CBS2230 = {"W": 2, "K": 2, "L": 30, "beta": 1.0}
# (method, rows per prompt), config.yaml's methods at the IMDB settings and config/alpaca_eval.yaml's at AlpacaEval's
IMDB = {
    "base": ({}, 1), "bon": ({"chunk": {"scorer": "explicit", "W": 1, "K": 16, "L": None}}, 16),
    "eft": ({"token": {"kind": "implicit", "w": 1.0}}, 1),
    "vas": ({"token": {"kind": "explicit", "beta": 1.0, "top_k": 20}}, 1),
    "cbs_implicit": ({"chunk": {"scorer": "implicit", **CBS445}}, 16),
    "cbs_explicit": ({"chunk": {"scorer": "explicit", **CBS445}}, 16),
    "ivg": ({"token": {"kind": "implicit", "w": 1.0}, "chunk": {"scorer": "explicit", **CBS445}}, 16),
}
ALPACA = {
    "base": ({}, 1), "eft": ({"token": {"kind": "implicit", "w": 1.0, "top_k": 50}}, 1),
    "cbs_explicit": ({"chunk": {"scorer": "explicit", **CBS2230}}, 4),
    "ivg": ({"token": {"kind": "implicit", "w": 1.0, "top_k": 50}, "chunk": {"scorer": "explicit", **CBS2230}}, 4),
}
WORDS = "the film was a long quiet story about a family that moves to the coast and finds".split()


def make_model(name: str, shapes: dict, device: str, dtype: torch.dtype, seed: int):
    """A causal LM of the named shape with random weights, built on the device."""
    vocab, arch, layers, width, heads, kv, inter, experts = shapes[name]
    size = len(vocabularies.load(vocab))
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=size, n_layer=layers, n_embd=width, n_head=heads, n_inner=inter, n_positions=1024)
    else:
        common = dict(vocab_size=size, hidden_size=width, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096)
        cfg = {"llama": lambda: LlamaConfig(**common), "mistral": lambda: MistralConfig(sliding_window=None, **common),
               "mixtral": lambda: MixtralConfig(num_local_experts=experts, num_experts_per_tok=2, sliding_window=None,
                                                **common)}[arch]()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def params_of(model) -> tuple[float, float]:
    """(total, active per token) parameters, for the plan's roofline."""
    total = sum(p.numel() for p in model.parameters())
    cfg = model.config
    experts = getattr(cfg, "num_local_experts", 0)
    if not experts:
        return float(total), float(total)
    per_expert = 3 * cfg.hidden_size * cfg.intermediate_size * cfg.num_hidden_layers
    return float(total), float(total - per_expert * (experts - cfg.num_experts_per_tok))


def prompt_text(tokenizer, tokens: int) -> str:
    words, i = [], 0
    while len(tokenizer(" ".join(words), add_special_tokens=False).input_ids) < tokens:
        words.append(WORDS[i % len(WORDS)])
        i += 1
    return " ".join(words)


def peak_memory(device: str) -> float:
    """GiB: the device's peak allocation since the last reset, or this process's peak resident set."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_generate(method: dict, members: dict, prompts: list[str], new_tokens: int, device: str,
                   top_k: int) -> tuple[float, int]:
    """Seconds to generate, and the steps taken (the longest row)."""
    decoder = build_decoder(method, members, sampling=Sampling(0.7, top_k), max_new_tokens=new_tokens)
    sync(device)
    start = time.perf_counter()
    result = decoder.generate(prompts, torch.Generator().manual_seed(1))
    sync(device)
    return time.perf_counter() - start, max(len(g.ids) for g in result.generations)


def warm_then_time(method: dict, members: dict, prompts: list[str], new_tokens: int, device: str,
                   top_k: int) -> tuple[float, int]:
    """The second of two identical runs. On the H200 a first run of a shape took up to 3.5 times as long as the
    next one, even after a short warm-up run (growing caches reach new allocation sizes at every step). The
    CPU variant, which only keeps this script working, times its first run."""
    if device.startswith("cuda"):
        timed_generate(method, members, prompts, new_tokens, device, top_k)
    return timed_generate(method, members, prompts, new_tokens, device, top_k)


def throughput_line(r: dict) -> str:
    head = f"  {r['setting']:7s} {r['guided']:13s} {r['method']:13s}"
    if "error" in r:
        return f"{head} failed: {r['error']}"
    return (f"{head} {r['rows']:3d} rows  {r['tokens_per_s']:9.1f} tok/s  {r['x_plain']:6.2f}x plain  "
            f"{r['seconds']:7.2f} s  {r['peak_gib']:6.1f} GiB")


def throughput(setting: str, guided: str, members: dict, methods: dict, prompt: str, new_tokens: int, device: str,
               top_k: int, lines: Path) -> list[dict]:
    """Each method on one prompt against plain sampling of as many rows (the prompt ``rows`` times); each row
    is appended to ``lines`` (JSON lines) as it is measured, so that a run stopped at a time limit keeps them."""
    plain, out = {}, []
    for name, (method, rows) in methods.items():
        try:  # each timed run repeats an untimed one of the same length: see warm_then_time
            if rows not in plain:
                plain[rows] = warm_then_time({}, members, [prompt] * rows, new_tokens, device, top_k)[0]
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds, steps = warm_then_time(method, members, [prompt], new_tokens, device, top_k)
        except Exception as error:  # one broken cell must not cost the other cells' numbers
            traceback.print_exc()
            out.append({"setting": setting, "guided": guided, "method": name, "rows": rows, "error": repr(error)})
        else:
            out.append({"setting": setting, "guided": guided, "method": name, "rows": rows,
                        "tokens_per_s": rows * steps / seconds, "x_plain": seconds / plain[rows],
                        "seconds": seconds, "peak_gib": peak_memory(device)})
        print(throughput_line(out[-1]), flush=True)
        with lines.open("a") as f:
            f.write(json.dumps(out[-1]) + "\n")
    return out


def member(name: str, model, template: str, kind: str = "lm") -> Member:
    return Member(model, vocabularies.load(REAL[name][0]), template, kind)


def part_throughput(shapes: dict, device: str, dtype, prompt_tokens: int, new_tokens: int, lines: Path,
                    settings: list[str]) -> tuple[list, dict]:
    rows, passes = [], {}
    if "imdb" in settings:
        imdb_throughput(shapes, device, dtype, prompt_tokens, new_tokens, lines, rows, passes)
    if "alpaca" in settings:
        alpaca_throughput(shapes, device, dtype, prompt_tokens, new_tokens, lines, rows, passes)
    return rows, passes


def imdb_throughput(shapes: dict, device: str, dtype, prompt_tokens: int, new_tokens: int, lines: Path, rows: list,
                    passes: dict) -> None:
    """gpt2 guiding the gpt2-large and gpt2-xl shapes, one vocabulary."""
    gpt2_tok = vocabularies.load("gpt2")
    small = {n: make_model("gpt2", shapes, device, dtype, seed) for n, seed in (("tuned", 2), ("untuned", 3))}
    value = ValueModel(make_model("gpt2", shapes, device, dtype, 4).transformer, "token", {}).to(device, dtype).eval()
    for guided_name in ("gpt2-large", "gpt2-xl"):
        guided = make_model(guided_name, shapes, device, dtype, 1)
        members = {"guided": member(guided_name, guided, "{prompt}"),
                   "tuned": member("gpt2", small["tuned"], "{prompt}"),
                   "untuned": member("gpt2", small["untuned"], "{prompt}"),
                   "value": Member(value, gpt2_tok, "{prompt}", "value")}
        prompt = prompt_text(gpt2_tok, prompt_tokens)
        rows += throughput("imdb", guided_name, members, IMDB, prompt, new_tokens, device, 0, lines)
        passes[guided_name] = measure_passes(guided, prompt_tokens, device)
        del guided, members
        _free(device)
    del small, value
    _free(device)


def alpaca_throughput(shapes: dict, device: str, dtype, prompt_tokens: int, new_tokens: int, lines: Path, rows: list,
                      passes: dict) -> None:
    """The Tulu pair and a gpt2 value guiding the Mistral and Mixtral shapes across vocabularies."""
    gpt2_tok = vocabularies.load("gpt2")
    tulu = {n: make_model("llama-2-7b", shapes, device, dtype, seed) for n, seed in (("tuned", 5), ("untuned", 6))}
    value = ValueModel(make_model("gpt2", shapes, device, dtype, 4).transformer, "token", {}).to(device, dtype).eval()
    for guided_name in ("mistral-7b", "mixtral-8x7b"):
        if guided_name == "mixtral-8x7b" and not fits(shapes, guided_name, device):
            print(f"  alpaca  {guided_name}: skipped, not enough free memory", flush=True)
            continue
        guided = make_model(guided_name, shapes, device, dtype, 1)
        members = {"guided": member(guided_name, guided, "chat"),
                   "tuned": member("llama-2-7b", tulu["tuned"], "chat"),
                   "untuned": member("llama-2-7b", tulu["untuned"], "chat"),
                   "value": Member(value, gpt2_tok, "\n\nHuman: {prompt}\n\nAssistant:", "value")}
        prompt = prompt_text(members["guided"].tokenizer, prompt_tokens)
        rows += throughput("alpaca", guided_name, members, ALPACA, prompt, new_tokens, device, 50, lines)
        passes[guided_name] = measure_passes(guided, prompt_tokens, device)
        del guided, members
        _free(device)


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def fits(shapes: dict, name: str, device: str) -> bool:
    """Whether a model of this shape fits in the device's free memory (bf16 weights, 10 % spare)."""
    if not device.startswith("cuda"):
        return True
    vocab, _, layers, width, _, kv, inter, experts = shapes[name]
    size = len(vocabularies.load(vocab))
    weights = 2 * (2 * size * width + layers * (4 * width * width + 3 * width * inter * max(experts, 1)))
    free, _ = torch.cuda.mem_get_info()
    return weights * 1.1 < free


@torch.no_grad()
def measure_passes(model, prompt_tokens: int, device: str, rows: int = 16, repeats: int = 5) -> dict:
    """Seconds of one prefill pass (``rows`` x prompt) and one cached decode pass (``rows`` x 1)."""
    ids = torch.randint(10, 1000, (rows, prompt_tokens), device=device)
    out = model(input_ids=ids, use_cache=True)
    step = torch.randint(10, 1000, (rows, 1), device=device)
    times = {"prefill": [], "decode": []}
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        sync(device)
        times["prefill"].append(time.perf_counter() - t)
        cache = out.past_key_values
        sync(device)
        t = time.perf_counter()
        model(input_ids=step, past_key_values=cache, use_cache=True)
        sync(device)
        times["decode"].append(time.perf_counter() - t)
    return {"params": params_of(model), "rows": rows, "prompt_tokens": prompt_tokens,
            "prefill_s": float(np.median(times["prefill"])), "decode_s": float(np.median(times["decode"]))}


def part_plan(passes: dict, device: str) -> dict:
    """The plan's per-pass seconds beside the measured ones; on a GPU the constants the decode passes imply."""
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    hw = next((h for key, h in HARDWARE.items() if key in name.lower()), None)
    rows = []
    for guided, p in passes.items():
        total, active = p["params"]
        rows.append({"guided": guided, **p,
                     "plan_prefill_s": pass_seconds((total, active), p["rows"] * p["prompt_tokens"], hw) if hw else None,
                     "plan_decode_s": pass_seconds((total, active), p["rows"], hw) if hw else None})
    implied = None
    if hw and len(rows) >= 2:  # decode = overhead + 2 * total bytes / bandwidth: a line through the points
        x = np.array([2 * r["params"][0] for r in rows])
        y = np.array([r["decode_s"] for r in rows])
        slope, intercept = np.polyfit(x, y, 1)
        implied = {"pass_overhead_s": float(intercept), "bandwidth_bytes_per_s": float(1 / slope) if slope > 0 else None,
                   "plan_pass_overhead_s": PASS_OVERHEAD, "plan_bandwidth_bytes_per_s": hw.bandwidth}
    plan = {"device": name, "hardware": hw.name if hw else None, "passes": rows, "implied": implied}
    print(plan_lines(plan))
    return plan


def plan_lines(plan: dict) -> str:
    lines = []
    for r in plan["passes"]:
        model = "n/a (the plan models GPUs)" if r["plan_decode_s"] is None else (
            f"plan {r['plan_prefill_s'] * 1e3:7.1f} / {r['plan_decode_s'] * 1e3:6.1f} ms")
        lines.append(f"  {r['guided']:13s} prefill {r['prefill_s'] * 1e3:8.1f} ms  "
                     f"decode {r['decode_s'] * 1e3:7.1f} ms  {model}")
    implied = plan["implied"]
    if implied:
        lines.append(f"  decode passes imply: overhead {implied['pass_overhead_s'] * 1e3:.1f} ms "
                     f"(plan {implied['plan_pass_overhead_s'] * 1e3:.1f}), bandwidth "
                     f"{(implied['bandwidth_bytes_per_s'] or float('nan')) / 1e12:.2f} TB/s "
                     f"(plan {implied['plan_bandwidth_bytes_per_s'] / 1e12:.2f})")
    return "\n".join(lines)


def show(folder: Path) -> int:
    """The tables of a finished (or stopped) run, from its JSON files."""
    correctness = folder / "correctness.json"
    if correctness.exists():
        print(f"1. correctness: tests/test_device.py: {json.loads(correctness.read_text())['summary']}")
    lines = folder / "throughput.jsonl"
    if lines.exists():
        print("2. throughput")
        for line in lines.read_text().splitlines():
            print(throughput_line(json.loads(line)))
    plan = folder / "plan.json"
    if plan.exists():
        plan = json.loads(plan.read_text())
        print(f"3. the plan's passes against measured ones on {plan['device']} (16 rows; prefill, one decode step)")
        print(plan_lines(plan))
    return 0


def part_correctness(device: str) -> dict:
    env = {**os.environ, "VALUEGUIDE_TEST_DEVICE": device}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    print(f"  tests/test_device.py on {device}: {summary}", flush=True)
    return {"device": device, "returncode": proc.returncode, "summary": summary,
            "seconds": time.perf_counter() - start, "output_tail": proc.stdout[-4000:] + proc.stderr[-2000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (real shapes, bf16) or cpu (tiny shapes, float32)")
    parser.add_argument("--out", default="results/gpu_check")
    parser.add_argument("--settings", default="imdb,alpaca", help="which throughput settings to measure")
    parser.add_argument("--no-correctness", action="store_true", help="skip tests/test_device.py")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per row (default: 128 on a GPU, 16 on a CPU)")
    parser.add_argument("--show", type=Path, metavar="FOLDER", help="print the tables of a run's JSON files and exit")
    args = parser.parse_args()
    if args.show:
        return show(args.show)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print(f"--device {args.device}: torch sees no CUDA device (use --device cpu for the tiny variant)")
        return 2
    shapes, dtype = (REAL, torch.bfloat16) if gpu else (TINY, torch.float32)
    prompt_tokens, new_tokens = (128, 128) if gpu else (16, 16)
    new_tokens = args.new_tokens or new_tokens
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    started = time.perf_counter()

    correctness = {"returncode": 0}
    if not args.no_correctness:
        print("1. correctness on the device", flush=True)
        correctness = part_correctness(args.device)
        (out / "correctness.json").write_text(json.dumps(correctness, indent=2) + "\n")
    print(f"2. throughput (prompt {prompt_tokens}, {new_tokens} new tokens, {'bf16' if gpu else 'float32'})", flush=True)
    lines = out / "throughput.jsonl"
    lines.unlink(missing_ok=True)
    rows, passes = part_throughput(shapes, args.device, dtype, prompt_tokens, new_tokens, lines,
                                    args.settings.split(","))
    print("3. the plan's passes against measured ones (16 rows; prefill of the prompt, one decode step)", flush=True)
    plan = part_plan(passes, args.device)
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(f"done in {time.perf_counter() - started:.0f} s; JSON in {out}/", flush=True)
    return 0 if correctness["returncode"] == 0 and not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
