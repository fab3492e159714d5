"""CPU proxies of a guided decoding step's GPU cost, against issue 34's targets.

IVG (CBS W=4, K=4, L=5: 16 rows; token-level EFT over the top 50) on the paper's real vocabularies:
the guided model on Mistral's, the Tulu-style pair on Llama-2's, the value model on GPT-2's, each
with random weights, 32 layers and a tiny width. After a warm-up generation, one generation is run
with timers around the models' passes (non-model milliseconds) and the same generation again with
operator and synchronisation counters (``proxy_counters.py``, whose table ``SYNCS`` says what counts
as a synchronisation; its hooks on every module call add a little to the models' time, not to the
rest). A step ends when the decoder appends a sampled token; step 1 also holds the
prompts' prefill, and the final scoring joins the last step.

    python bench/bench_step_proxies.py [--tokens 20] [--width 32] [--json proxies.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check's model builder, the counters

from gpu_check import make_model, member, prompt_text  # noqa: E402
from proxy_counters import SYNCS, Tally, counting, model_regions, steps_at  # noqa: E402

from valueguide import vocabularies  # noqa: E402
from valueguide.decoding import Member, Sampling, build_decoder  # noqa: E402
from valueguide.decoding.packed import PackedGPT2  # noqa: E402
from valueguide.decoding.search import Rows  # noqa: E402
from valueguide.value.model import ValueModel  # noqa: E402

METHOD = {"token": {"kind": "implicit", "w": 1.0, "top_k": 50},
          "chunk": {"scorer": "explicit", "W": 4, "K": 4, "L": 5, "beta": 1.0}}
# per step: (what, key in a step's numbers, target, scale printed); each is met when its max is at most its target
TARGETS = [("host synchronisations", "syncs", 2, 1),
           ("ops outside captured regions", "ops_outside", 60, 1),
           ("non-model ms", "non_model_ms", 1.0, 1),
           ("cache MiB copied by torch.cat", "cache_cat_bytes", 0, 2 ** -20)]
SHAPE_TARGET = 8


def shapes(width: int) -> dict:
    """gpu_check's names at 32 layers of ``width`` (heads of 16)."""
    heads = max(1, width // 16)
    return {"mistral-7b": ("mistral", "mistral", 32, width, heads, 1, 2 * width, 0),
            "llama-2-7b": ("llama2", "llama", 32, width, heads, heads, 2 * width, 0),
            "gpt2": ("gpt2", "gpt2", 32, width, heads, heads, 4 * width, 0)}


def members(width: int) -> dict:
    tiny = shapes(width)
    value = ValueModel(make_model("gpt2", tiny, "cpu", torch.float32, 4).transformer, "token", {}).eval()
    return {"guided": member("mistral-7b", make_model("mistral-7b", tiny, "cpu", torch.float32, 1), "chat"),
            "tuned": member("llama-2-7b", make_model("llama-2-7b", tiny, "cpu", torch.float32, 5), "chat"),
            "untuned": member("llama-2-7b", make_model("llama-2-7b", tiny, "cpu", torch.float32, 6), "chat"),
            "value": Member(value, vocabularies.load("gpt2"), "\n\nHuman: {prompt}\n\nAssistant:", "value")}


def regions(decoder) -> list[tuple[str, object]]:
    """Every model a step may call, by role (the paired small models as one; the packed runner only
    ever runs the GPT-2 value model here)."""
    models = [(role, m.model) for role, m in decoder.members.items()]
    if decoder.paired is not None:
        models.append(("tuned+untuned (paired)", decoder.paired))
    return [*models, ("value", PackedGPT2)]


def measure(decoder, prompts: list[str], counted: bool) -> Tally:
    tally = Tally()
    with model_regions(tally, regions(decoder)), steps_at(tally, Rows, "append"):
        if counted:
            with counting(tally):
                decoder.generate(prompts, torch.Generator().manual_seed(0))
        else:
            decoder.generate(prompts, torch.Generator().manual_seed(0))
        tally.merge_tail()
    return tally


def per_step(timed: Tally, counted: Tally) -> list[dict]:
    steps = []
    for t, c in zip(timed.steps, counted.steps):
        steps.append({"syncs": c.get("syncs", 0), "ops_outside": c.get("ops_outside", 0),
                      "ops_in_models": c.get("ops_in_models", 0), "cache_cat_bytes": c.get("cache_cat_bytes", 0),
                      "ms": 1e3 * t["seconds"], "non_model_ms": 1e3 * (t["seconds"] - t["model_seconds"])})
    return steps


def summary(steps: list[dict], shapes_by_role: dict) -> dict:
    later = steps[1:] or steps
    keys = ["syncs", "ops_outside", "ops_in_models", "cache_cat_bytes", "ms", "non_model_ms"]
    out = {"steps": len(steps), "first_step": steps[0],
           "mean": {k: sum(s[k] for s in later) / len(later) for k in keys},
           "max": {k: max(s[k] for s in later) for k in keys},
           "pass_shapes": {role: len(s) for role, s in sorted(shapes_by_role.items())}}
    out["met"] = {key: out["max"][key] <= target for _, key, target, _ in TARGETS}
    out["met"]["pass_shapes"] = all(n <= SHAPE_TARGET for n in out["pass_shapes"].values())
    return out


def report(s: dict, shapes_by_role: dict) -> str:
    lines = [f"IVG 16 rows (CBS 4,4,5), EFT top-50, real vocabularies, 32-layer tiny models; {s['steps']} steps",
             "per step over steps 2.. (step 1 holds the prefill):",
             f"  {'proxy':32s} {'mean':>10s} {'max':>10s} {'step 1':>10s} {'target':>8s}  met"]
    for what, key, target, scale in TARGETS:
        lines.append(f"  {what:32s} {scale * s['mean'][key]:10.1f} {scale * s['max'][key]:10.1f} "
                     f"{scale * s['first_step'][key]:10.1f} "
                     f"{'<= ' + str(target):>8s}  {'yes' if s['met'][key] else 'no'}")
    for what, key in (("ops inside the models", "ops_in_models"), ("step ms (timed run)", "ms")):
        lines.append(f"  {what:32s} {s['mean'][key]:10.1f} {s['max'][key]:10.1f} {s['first_step'][key]:10.1f}")
    lines.append(f"distinct pass shapes over the generation (target <= {SHAPE_TARGET} per model):")
    for role, n in s["pass_shapes"].items():
        widths = sorted({ids[1] for ids, _ in shapes_by_role[role]})
        lines.append(f"  {role:32s} {n:4d}  {'yes' if n <= SHAPE_TARGET else 'no'}   (widths {widths})")
    lines.append("where the synchronisations come from (per step, all steps):")
    by_count = sorted(s["sync_sites"].items(), key=lambda kv: -kv[1])
    lines += [f"  {n / s['steps']:6.2f}  {site}" for site, n in by_count]
    lines.append("host synchronisations: what would sync on CUDA with the decoder's tensors on the device:")
    lines += [f"  {what}: {why}" for what, why in SYNCS.items()]
    lines.append("cache bytes: output bytes of every torch.cat of floating 4D tensors on dim 2 (a layer's K or V)")
    lines.append("ops outside captured regions: aten operators dispatched outside every model pass (none is captured)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per row")
    parser.add_argument("--width", type=int, default=32, help="hidden width of every model (32 layers each)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    if args.tokens < 2 or args.width < 16 or args.width % 16:
        parser.error("--tokens must be at least 2 and --width a multiple of 16")
    torch.set_num_threads(1)
    models = members(args.width)
    decoder = build_decoder(METHOD, models, sampling=Sampling(1.0), max_new_tokens=args.tokens)
    prompts = [prompt_text(models["guided"].tokenizer, 16)]
    decoder.generate(prompts, torch.Generator().manual_seed(0))  # warm-up
    timed, counted = measure(decoder, prompts, counted=False), measure(decoder, prompts, counted=True)
    if len(timed.steps) != len(counted.steps):
        raise RuntimeError("the timed and the counted generation took different steps")
    s = {**summary(per_step(timed, counted), counted.shapes), "sync_sites": dict(counted.sync_sites)}
    print(report(s, counted.shapes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(s, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
