"""Budget a run before starting it: jobs per stage, and per method the tokens and forward passes of every
model role, turned into GPU time by a roofline.

Counts are upper bounds: every row runs to ``max_new_tokens`` (EOS and stop strings end rows sooner).
Time per forward pass is ``overhead + max(weight bytes / bandwidth, 2 * active params * tokens / FLOP/s)``:
decoding a few rows streams the weights (memory bound), long prompts and training are compute bound,
and an eager transformers forward costs ~19 ms of launches and Python whatever its size (measured on an H200).
Bandwidth and FLOP/s are effective figures (32 % and 40 % of the data sheet's peaks), weights bf16;
model sizes come from ``model_size`` (a table, the world config, or a config.json in the hub cache).
The counting mirrors ``decoding.search.Decoder``: every model gets one prefill pass per batch, then is
fed the new tokens of every row when it is next read: each step for the guided model and token-level
guides, after each chunk for a chunk scorer (at most ``MAX_BLOCK`` tokens a pass). A model with
another vocabulary reads the text in its own tokens (``aligned.TextStream``): ``TEXT_FEED`` of them per
guided token, roll-backs included, and for token-level guidance the top-k candidates' tokens that its
kept outputs cannot score (``CANDIDATE_FEED`` per candidate a step). Only the gold reward re-reads whole
texts, one pass per chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import model_specs, prompt_splits, value_is_pretrained, value_spec
from .decoding.method_spec import EXPLICIT_TOP_K, MAX_BLOCK, Method
from .hub import hub_ids
from .model_size import model_params


@dataclass(frozen=True)
class Hardware:
    name: str
    bandwidth: float  # effective bytes/s
    flops: float  # effective dense bf16 FLOP/s
    memory: float  # bytes of GPU memory


# Effective bandwidth: the share of the datasheet's that 16-row decode passes of eager transformers models
# reached on an H200 (bench/gpu_check.py, bench/measured/h200-2026-11-28-run2: Mistral-7B and Mixtral-8x7B
# shapes imply 1.52 TB/s of 4.8), taken to hold on the other cards too; FLOP/s: not yet calibrated.
BANDWIDTH_SHARE = 0.32
HARDWARE = {
    "h100": Hardware("H100 SXM 80 GB", BANDWIDTH_SHARE * 3.35e12, 0.4 * 989e12, 80e9),
    "h200": Hardware("H200 141 GB", BANDWIDTH_SHARE * 4.8e12, 0.4 * 989e12, 141e9),
    "a100": Hardware("A100 80 GB", BANDWIDTH_SHARE * 2.0e12, 0.4 * 312e12, 80e9),
}

def finetuned_entries(config: dict) -> set[str]:
    """The finetune entries some method samples (each tunes every guided model; the others are inert)."""
    return {Method.from_config(m or {}).finetuned for m in config["generate"]["methods"].values()} - {None}


def jobs_per_stage(config: dict) -> dict[str, int]:
    """The jobs a fresh run has, per Snakemake rule (what ``snakemake -n`` lists on empty results)."""
    gen = config["generate"]
    world, shards = config.get("world"), gen.get("shards", 1)
    generations = len(gen["large_models"]) * len(gen["methods"])
    jobs = {
        "fetch": int(bool(hub_ids(model_specs(config)))),
        "world_corpus": int(bool(world)), "world_lm": len(world["models"]) if world else 0,
        "world_reward": int(bool(world)), "world_summary": int(bool(world)),
        "prompts": len(prompt_splits(config)), "sample": 1, "fit_value": int(not value_is_pretrained(config)),
        "diagnose_value": 1, "fit_implicit": 1, "finetune": len(finetuned_entries(config)) * len(gen["large_models"]),
        "generate": generations * shards, "merge_shards": generations if shards > 1 else 0,
        "evaluate_reward": int(config["evaluate"]["reward"]),
        "evaluate_alpaca": int(bool(config["evaluate"].get("alpaca"))),
        "report": 1, "all": 1,
    }
    return {rule: n for rule, n in jobs.items() if n}


@dataclass
class Cost:
    """Forward passes, tokens fed and seconds, per model role."""

    passes: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def add(self, role: str, passes: float, tokens: float, seconds: float | None) -> None:
        self.passes[role] = self.passes.get(role, 0) + passes
        self.tokens[role] = self.tokens.get(role, 0) + tokens
        total = self.seconds.get(role, 0)
        self.seconds[role] = None if seconds is None or total is None else total + seconds


BF16_BYTES = 2
# Seconds per forward pass of an eager transformers model (kernel launches, Python), whatever its size: what
# the same H200 runs imply (18.7 ms; the gpt2-large shape's decode took 20.9 ms, gpt2-xl's 43.1 ms).
PASS_OVERHEAD = 0.019
# Measured by bench/bench_cross_vocabulary.py (a GPT-2-like guided tokenizer, Llama-like guiding ones):
TEXT_FEED = 1.1  # own tokens a text-aligned model is fed per guided token (fed/tok 1.0-1.1)
CANDIDATE_FEED = {"lm": 0.08, "token": 0.08, "scalar": 1.1}  # tokens fed per top-k candidate a step


def pass_seconds(params: tuple[float, float] | None, tokens: float, hw: Hardware) -> float | None:
    """Time of one forward pass over ``tokens`` tokens (None: unknown model size)."""
    if params is None:
        return None
    total, active = params
    return PASS_OVERHEAD + max(2 * total / hw.bandwidth, 2 * active * tokens / hw.flops)


class Planner:
    """Costs of one config's stages; ``prompt_tokens`` is the assumed prompt length."""

    def __init__(self, config: dict, hw: Hardware, prompt_tokens: int):
        self.config, self.hw, self.prompt = config, hw, prompt_tokens
        self._sizes: dict[str, tuple[float, float] | None] = {}

    def params(self, spec: str) -> tuple[float, float] | None:
        """(total, active) parameters of a model, None where nothing on this machine says."""
        if spec not in self._sizes:
            self._sizes[spec] = model_params(spec, self.config)
        return self._sizes[spec]

    def job_weights(self, model: str, method_name: str) -> dict[str, float | None]:
        """Bytes of weights (bf16) of every model a generate job loads, per role (None: unknown size)."""
        method = Method.from_config(self.config["generate"]["methods"][method_name] or {})
        sizes = {role: self.params(self.spec(role, model)) for role in ["guided", *sorted(method.roles())]}
        return {role: None if size is None else BF16_BYTES * size[0] for role, size in sizes.items()}

    def spec(self, role: str, model: str) -> str:
        fit = self.config["fit_implicit"]
        if role == "guided":
            return self.config["models"][model]["path"]
        if role == "untuned" or (role == "tuned" and fit["mode"] == "train"):
            return self.config["models"][fit["untuned"]]["path"]  # the tuned copy has the untuned size
        if role == "tuned":
            return fit["tuned"]
        return value_spec(self.config)[1] if role == "value" else self.config["reward_model"]

    def shares_vocabulary(self, model: str, role: str) -> bool:
        """Whether a scorer streams with the guided model or re-tokenises text, decided by name (the
        decoder checks the real tokenizers): the same repository, or one family of VOCABULARIES."""
        return _vocabulary(self.spec("guided", model)) == _vocabulary(self.spec(role, model))

    def stream(self, cost: Cost, role: str, params, batches: int, prompts: int, rows: int, steps: int,
               every: int = 1, extra: float = 0, per_token: float = 1.0) -> None:
        """A model fed the growing rows: a prefill pass over the prompts, then the new tokens each
        ``every`` steps (``per_token`` of its own per guided token); ``extra`` candidate tokens per row
        ride along each pass (token-level guidance that scores its top-k by feeding them)."""
        fed = [min(every, steps - t) for t in range(0, steps, every)]
        feeds = [min(MAX_BLOCK, n - b) for n in fed for b in range(0, n, MAX_BLOCK)]
        tokens = [prompts * self.prompt] + [rows * (n * per_token + extra) for n in feeds]
        seconds = _total(pass_seconds(params, n, self.hw) for n in tokens)
        cost.add(role, batches * len(tokens), batches * sum(tokens), seconds and batches * seconds)

    def rescore(self, cost: Cost, role: str, params, batches: int, rows: int, steps: int, chunk: int) -> None:
        """A scorer re-reading whole sequences after every chunk."""
        ends = [min(c * chunk, steps) for c in range(1, math.ceil(steps / chunk) + 1)]
        lengths = [rows * (self.prompt + end) for end in ends]
        seconds = _total(pass_seconds(params, n, self.hw) for n in lengths)
        cost.add(role, batches * len(ends), batches * sum(lengths), seconds and batches * seconds)

    def generate(self, model: str, method_name: str, n_prompts: int) -> tuple[Cost, float]:
        """Cost of one (model, method) over ``n_prompts`` prompts, and the tokens it samples."""
        gen = self.config["generate"]
        method = Method.from_config(gen["methods"][method_name] or {})
        rows_per_prompt, steps = method.chunk.W * method.chunk.K, gen["max_new_tokens"]
        batches, size = math.ceil(n_prompts / gen["batch_size"]), min(gen["batch_size"], n_prompts)
        rows, cost, chunk = size * rows_per_prompt, Cost(), method.chunk.L or steps
        token_roles = {"implicit": {"tuned", "untuned"}, "explicit": {"value"}}.get(method.token.kind, set())
        every_step = {"guided"} | token_roles
        scorer = {"implicit": ("tuned", "untuned"), "explicit": ("value",), "gold": ("reward",)}.get(
            method.chunk.scorer, ())
        k = EXPLICIT_TOP_K if method.token.top_k is None else method.token.top_k
        for role in sorted(every_step | set(scorer)):
            params = self.params(self.spec(role, model))
            if role == "reward":
                self.rescore(cost, role, params, batches, rows, steps, chunk)
                continue
            text = role != "guided" and not self.shares_vocabulary(model, role)
            per_token = TEXT_FEED if text else 1.0
            if role in every_step:
                head = self.config["fit_value"]["head"] if role == "value" else "lm"
                extra = k * CANDIDATE_FEED[head] if text else (k if head == "scalar" else 0)
                # read before each draw: the last token drawn is never fed
                self.stream(cost, role, params, batches, size, rows, steps - 1, extra=extra, per_token=per_token)
            else:
                self.stream(cost, role, params, batches, size, rows, steps, every=chunk, per_token=per_token)
        return cost, n_prompts * rows_per_prompt * steps

    def training_seconds(self, spec: str, tokens: float) -> float | None:
        """Forward + backward (6 P per token) plus a frozen forward (2 P: targets, or DPO's reference)."""
        params = self.params(spec)
        return None if params is None else 8 * params[1] * tokens / self.hw.flops

    def stages(self) -> dict[str, float | None]:
        """Seconds per stage on one GPU (None where a model size is unknown)."""
        c, splits = self.config, prompt_splits(self.config)
        s = c["sample"]
        policy = c["models"][s["policy"]]["path"]
        n_samples, length = c["prompts"]["n_train"] * s["n"], self.prompt + s["max_new_tokens"]
        cost, rows = Cost(), min(s["batch_size"], n_samples)
        self.stream(cost, "policy", self.params(policy), math.ceil(n_samples / rows), rows, rows, s["max_new_tokens"])
        reward = self.params(c["reward_model"])
        cost.add("reward", 1, n_samples * length, pass_seconds(reward, n_samples * length, self.hw))
        fv, fi = c["fit_value"], c["fit_implicit"]
        value_tokens = n_samples * length * fv["epochs"] * fv.get("passes_per_batch", 1)
        pairs = c["prompts"]["n_train"] * min(fi.get("pairs", {}).get("per_prompt", 1), math.comb(s["n"], 2))
        dpo_tokens = 2 * pairs * length * fi.get("epochs", 1) if fi["mode"] == "train" else 0
        out = {"sample": _total(cost.seconds.values()),
               "fit_value": 0.0 if value_is_pretrained(c) else self.training_seconds(fv["backbone"], value_tokens),
               "fit_implicit": self.training_seconds(self.spec("untuned", ""), dpo_tokens)}
        gen_seconds = []
        for split in splits[1:]:
            for model in c["generate"]["large_models"]:
                for method in c["generate"]["methods"]:
                    cost, _ = self.generate(model, method, c["prompts"][f"n_{split}"])
                    gen_seconds.append(_total(cost.seconds.values()))
        out["generate"] = _total(gen_seconds)
        outputs = len(c["generate"]["large_models"]) * len(c["generate"]["methods"])
        gen_length = self.prompt + c["generate"]["max_new_tokens"]
        if c["evaluate"]["reward"]:
            out["evaluate_reward"] = pass_seconds(reward, c["prompts"]["n_test"] * outputs * gen_length, self.hw)
        if (c["evaluate"].get("alpaca") or {}).get("judge") == "local":  # every output and the references
            texts = c["prompts"]["n_alpaca"] * (outputs + 1)
            out["evaluate_alpaca"] = pass_seconds(reward, texts * gen_length, self.hw)
        return out


# Repositories whose tokenizers are one vocabulary, by name prefix (the tiny world has one tokenizer).
VOCABULARIES = (("world:",), ("openai-community/gpt2", "lvwerra/gpt2", "chadlzx/gpt2"),
                ("meta-llama/Llama-2", "allenai/tulu-2", "chadlzx/llama-ultrafeedback"),
                ("mistralai/Mistral-7B", "mistralai/Mixtral-8x7B"))


def _vocabulary(spec: str):
    return next((i for i, prefixes in enumerate(VOCABULARIES) if spec.startswith(prefixes)), spec)


def _total(seconds) -> float | None:
    seconds = list(seconds)
    return None if None in seconds else sum(seconds)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _count(x: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def render_plan(config: dict, hw: Hardware = HARDWARE["h100"], prompt_tokens: int = 128, gpus: int = 1) -> str:
    """The plan as text: jobs per stage, cost per (split, model, method), GPU hours per stage, the judge's
    price, and a warning for each generate job whose models do not fit ``gpus`` cards."""
    planner, gen = Planner(config, hw, prompt_tokens), config["generate"]
    lines = ["Jobs per stage (a fresh run):"]
    jobs = jobs_per_stage(config)
    lines += [f"  {rule:<16}{n:>5}" for rule, n in jobs.items()] + [f"  {'total':<16}{sum(jobs.values()):>5}", ""]
    lines.append(f"Generation, upper bounds (every row runs to max_new_tokens = {gen['max_new_tokens']}; "
                 f"prompts of {prompt_tokens} tokens assumed); GPU time on one {hw.name}:")
    lines.append(f"  {'split/model/method':<34}{'rows':>5}{'sampled':>9}  role: passes / tokens fed / GPU time")
    slowest = []
    for split in prompt_splits(config)[1:]:
        for model in gen["large_models"]:
            for method in gen["methods"]:
                cost, sampled = planner.generate(model, method, config["prompts"][f"n_{split}"])
                total = _total(cost.seconds.values())
                if total is not None:
                    slowest.append((total, f"{split}/{model}/{method}"))
                chunk = Method.from_config(gen["methods"][method] or {}).chunk
                roles = "; ".join(f"{role} {_count(cost.passes[role])} / {_count(cost.tokens[role])} / "
                                  f"{_duration(cost.seconds[role])}" for role in sorted(cost.passes))
                name = f"{split}/{model}/{method}"
                lines.append(f"  {name:<34}{chunk.W * chunk.K:>5}{_count(sampled):>9}  {roles}")
    lines += ["", f"GPU time per stage on one {hw.name} (sum over its jobs):"]
    stages = planner.stages()
    lines += [f"  {stage:<16}{_duration(seconds):>10}" for stage, seconds in stages.items()]
    lines.append(f"  {'total':<16}{_duration(_total(stages.values())):>10}")
    if slowest:
        seconds, name = max(slowest)
        lines.append(f"  slowest generate job: {name}, {_duration(seconds / gen.get('shards', 1))} "
                     f"(one GPU per job: the generate stage's wall time)")
    if config["evaluate"].get("alpaca") and config["evaluate"]["alpaca"]["judge"] == "gpt4_turbo":
        lines.append(judge_line(config, prompt_tokens))
    unknown = [spec for spec in model_specs(config) if planner.params(spec) is None]
    if unknown:
        lines.append(f"  unknown = model size unknown: not in valueguide.model_size.PARAMS and no config.json in "
                     f"the hub cache (`valueguide fetch` caches it): {', '.join(unknown)}")
    return "\n".join(lines + memory_warnings(planner, gpus))


def memory_warnings(planner: Planner, gpus: int = 1) -> list[str]:
    """A line per large model whose generate jobs' weights do not fit the GPU memory a job gets: all of one
    card, or of ``gpus`` cards when ``device_map: auto`` spreads the models over them."""
    config, hw, lines = planner.config, planner.hw, []
    spread = gpus if config.get("device_map") == "auto" else 1
    held = f"{gpus} × {hw.name}" if spread > 1 else f"one {hw.name}"
    for model in config["generate"]["large_models"]:
        jobs = [(_total(weights.values()), method, weights) for method in config["generate"]["methods"]
                for weights in [planner.job_weights(model, method)]]
        over = [job for job in jobs if job[0] is not None and job[0] > spread * hw.memory]
        if not over:
            continue
        need, method, weights = max(over, key=lambda job: job[0])
        parts = ", ".join(f"{role} {size / 1e9:.1f}" for role, size in weights.items())
        cards = [f"one {other.name} (--gpu {key})" for key, other in HARDWARE.items() if need <= other.memory]
        n = math.ceil(need / hw.memory)
        cards.append(f"{n} × {hw.name} with device_map: auto (--gpus {n})")
        lines.append(f"warning: {len(over)} generate job(s) of {model} do not fit {held}: "
                     f"{', '.join(job[1] for job in over)}. The largest, {method}, loads {need / 1e9:.1f} GB of "
                     f"weights in bf16 ({parts} GB; the KV cache and activations come on top); "
                     f"it fits {' or '.join(cards)}.")
    return lines


# The GPT-4-turbo judge: alpaca_eval's weighted_alpaca_eval_gpt4_turbo annotator asks gpt-4-1106-preview for
# one token (max_tokens: 1, its logprobs) on a prompt of its template (alpaca_eval_clf.txt: 1,398 characters,
# ~350 tokens), the instruction and the two outputs. Prices: OpenAI's price list for gpt-4-1106-preview at its
# release (November 2023): $0.01 per 1k input and $0.03 per 1k output tokens (alpaca_eval 0.6.6's
# decoders/openai.py books the same input price).
JUDGE_TEMPLATE_TOKENS = 350
JUDGE_OUTPUT_TOKENS = 1
JUDGE_USD_PER_INPUT_TOKEN = 10 / 1e6
JUDGE_USD_PER_OUTPUT_TOKEN = 30 / 1e6


def judge_line(config: dict, prompt_tokens: int) -> str:
    """The judgements AlpacaEval asks of GPT-4-turbo and their price, an upper bound: every output (the
    reference's too) as long as max_new_tokens."""
    gen = config["generate"]
    calls = config["prompts"]["n_alpaca"] * len(gen["large_models"]) * len(gen["methods"])
    tokens_in = JUDGE_TEMPLATE_TOKENS + prompt_tokens + 2 * gen["max_new_tokens"]
    usd = calls * (tokens_in * JUDGE_USD_PER_INPUT_TOKEN + JUDGE_OUTPUT_TOKENS * JUDGE_USD_PER_OUTPUT_TOKEN)
    return (f"  evaluate_alpaca: {calls} GPT-4-turbo judgements (API, no GPU), at most {tokens_in} tokens in and "
            f"{JUDGE_OUTPUT_TOKENS} out each: at most ${usd:,.0f}")
