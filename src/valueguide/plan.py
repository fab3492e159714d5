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
texts, one pass per chunk. A method that samples a fine-tuned copy also streams the frozen guided model
(its reference for the KL).

Training costs ``TRAIN_FLOPS`` per parameter and token (a forward, and a backward of twice its cost; for
LoRA an upper bound: its backward skips the frozen weights' gradients but still runs through them, and
recomputes the forward under gradient checkpointing) plus ``FROZEN_FLOPS`` for each frozen model read
(targets, a reference, a reward model).
The fine-tuning baselines (``finetune``) are booked per entry and guided model: DPO over its pairs, RL
(RLOO) per step as the generation of its rollouts plus their training pass; with LoRA only the frozen
base weights sit in memory (adapters, their gradients and optimizer states are small), in full
fine-tuning float32 weights, gradients and Adam's two moments (16 bytes per parameter) beside a bf16
reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import model_specs, needs_classifier, prompt_splits, value_is_pretrained, value_spec
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


def parse_method(section: dict | None) -> Method:
    return Method.from_config(section or {})


def finetune_entries(config: dict) -> dict[str, dict]:
    """The ``finetune`` entries some method samples from (``finetuned: NAME``): one job per guided model each."""
    named = {parse_method(m).finetuned for m in config["generate"]["methods"].values()}
    return {name: entry for name, entry in (config.get("finetune") or {}).items() if entry and name in named}


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
        "diagnose_value": 1, "fit_classifier": int(needs_classifier(config)), "fit_implicit": 1,
        "finetune": len(finetune_entries(config)) * len(gen["large_models"]),
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
FULL_TRAINING_BYTES = 16  # per parameter trained in full: float32 weights, gradients, Adam's two moments
TRAIN_FLOPS = 6  # per parameter and token trained: forward 2, backward 4
FROZEN_FLOPS = 2  # per parameter and token of a frozen model's forward
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
        sizes = {role: self.params(self.spec(role, model)) for role in ["guided", *sorted(self.roles(method_name))]}
        return {role: None if size is None else BF16_BYTES * size[0] for role, size in sizes.items()}

    def roles(self, method_name: str) -> set[str]:
        """The models a generate job loads besides the guided one: a fine-tuned copy's is the frozen reference."""
        method = parse_method(self.config["generate"]["methods"][method_name])
        return method.roles() | ({"reference"} if method.finetuned else set())

    def spec(self, role: str, model: str) -> str:
        fit = self.config["fit_implicit"]
        if role in ("guided", "reference"):  # a fine-tuned copy has the guided model's size
            return self.config["models"][model]["path"]
        if role == "classifier":
            return self.config["fit_classifier"]["backbone"]
        if role == "untuned" or (role == "tuned" and fit["mode"] == "train"):
            return self.config["models"][fit["untuned"]]["path"]  # the tuned copy has the untuned size
        if role == "tuned":
            return fit["tuned"]
        if role == "classifier":
            return self.config["fit_classifier"]["backbone"]
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
        method = parse_method(gen["methods"][method_name])
        rows_per_prompt, steps = method.chunk.W * method.chunk.K, gen["max_new_tokens"]
        batches, size = math.ceil(n_prompts / gen["batch_size"]), min(gen["batch_size"], n_prompts)
        rows, cost, chunk = size * rows_per_prompt, Cost(), method.chunk.L or steps
        token_roles = {"implicit": {"tuned", "untuned"}, "explicit": {"value"},
                       "fudge": {"classifier"}}.get(method.token.kind, set())
        every_step = {"guided"} | token_roles | ({"reference"} if method.finetuned else set())
        scorer = {"implicit": ("tuned", "untuned"), "explicit": ("value",), "gold": ("reward",)}.get(
            method.chunk.scorer, ())
        k = EXPLICIT_TOP_K if method.token.top_k is None else method.token.top_k
        for role in sorted(every_step | set(scorer)):
            params = self.params(self.spec(role, model))
            if role == "reward":
                self.rescore(cost, role, params, batches, rows, steps, chunk)
                continue
            text = role not in ("guided", "reference") and not self.shares_vocabulary(model, role)
            per_token = TEXT_FEED if text else 1.0
            if role in every_step:
                head = {"value": self.config["fit_value"]["head"], "classifier": "token"}.get(role, "lm")
                extra = k * CANDIDATE_FEED[head] if text else (k if head == "scalar" else 0)
                # read before each draw: the last token drawn is never fed
                self.stream(cost, role, params, batches, size, rows, steps - 1, extra=extra, per_token=per_token)
            else:
                self.stream(cost, role, params, batches, size, rows, steps, every=chunk, per_token=per_token)
        return cost, n_prompts * rows_per_prompt * steps

    def training_seconds(self, spec: str, tokens: float, frozen: tuple[str, ...] | None = None) -> float | None:
        """Training ``spec`` on ``tokens`` tokens, with a frozen forward of each of ``frozen`` (default: one of
        ``spec`` itself: the value's targets, DPO's reference)."""
        sizes = [self.params(s) for s in (spec, *((spec,) if frozen is None else frozen))]
        if None in sizes:
            return None
        flops = TRAIN_FLOPS * sizes[0][1] + FROZEN_FLOPS * sum(size[1] for size in sizes[1:])
        return flops * tokens / self.hw.flops

    def finetune(self, entry: dict, model: str) -> tuple[float, float | None]:
        """Tokens trained and seconds of one ``finetune`` entry on one guided model: DPO, epochs over the
        pairs of the samples (chosen and rejected, policy and reference); RL, ``steps`` of ``batch_size``
        prompts x ``generations_per_prompt`` rollouts, each generated by the policy, then scored by the
        reward model and trained on beside the reference's forward."""
        c, spec = self.config, self.config["models"][model]["path"]
        length = self.prompt + c["sample"]["max_new_tokens"]
        if entry["algorithm"] == "dpo":
            tokens = 2 * _pairs(c, entry.get("pairs", {})) * length * entry.get("epochs", 1)
            return tokens, self.training_seconds(spec, tokens)
        rows = entry["batch_size"] * entry.get("generations_per_prompt", 1)
        rollouts = Cost()
        self.stream(rollouts, "policy", self.params(spec), entry["steps"], rows, rows, c["sample"]["max_new_tokens"])
        tokens = entry["steps"] * rows * length
        train = self.training_seconds(spec, tokens, frozen=(spec, c["reward_model"]))
        return tokens, _total([rollouts.seconds["policy"], train])

    def finetune_weights(self, entry: dict, model: str) -> float | None:
        """Bytes a fine-tuning job holds: the frozen bf16 base with LoRA (its reference: the adapters off),
        else float32 training state beside a bf16 reference; RL also the reward model."""
        base = self.params(self.config["models"][model]["path"])
        reward = self.params(self.config["reward_model"]) if entry["algorithm"] == "rl" else (0, 0)
        if base is None or reward is None:
            return None
        per_param = BF16_BYTES if entry.get("lora") else FULL_TRAINING_BYTES + BF16_BYTES
        return per_param * base[0] + BF16_BYTES * reward[0]

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
        dpo_tokens = 2 * _pairs(c, fi.get("pairs", {})) * length * fi.get("epochs", 1) if fi["mode"] == "train" else 0
        out = {"sample": _total(cost.seconds.values()),
               "fit_value": 0.0 if value_is_pretrained(c) else self.training_seconds(fv["backbone"], value_tokens)}
        if needs_classifier(c):  # labels are fixed: no frozen forward
            fc = c["fit_classifier"]
            out["fit_classifier"] = self.training_seconds(fc["backbone"], n_samples * length * fc["epochs"], frozen=())
        out["fit_implicit"] = self.training_seconds(self.spec("untuned", ""), dpo_tokens)
        if finetune_entries(c):
            out["finetune"] = _total(self.finetune(entry, model)[1] for entry in finetune_entries(c).values()
                                     for model in c["generate"]["large_models"])
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
                ("meta-llama/Llama-2", "allenai/tulu-2", "chadlzx/llama-ultrafeedback", "hanseungwook/vas-"),
                ("mistralai/Mistral-7B", "mistralai/Mixtral-8x7B"))


def _vocabulary(spec: str):
    return next((i for i, prefixes in enumerate(VOCABULARIES) if spec.startswith(prefixes)), spec)


def _pairs(config: dict, pairs: dict) -> int:
    """DPO pairs drawn from the samples: ``per_prompt`` of each prompt's ``sample.n`` choose 2."""
    return config["prompts"]["n_train"] * min(pairs.get("per_prompt", 1), math.comb(config["sample"]["n"], 2))


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
                chunk = parse_method(gen["methods"][method]).chunk
                roles = "; ".join(f"{role} {_count(cost.passes[role])} / {_count(cost.tokens[role])} / "
                                  f"{_duration(cost.seconds[role])}" for role in sorted(cost.passes))
                name = f"{split}/{model}/{method}"
                lines.append(f"  {name:<34}{chunk.W * chunk.K:>5}{_count(sampled):>9}  {roles}")
    lines += finetune_lines(planner)
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
    return "\n".join(lines + memory_warnings(planner, gpus) + finetune_warnings(planner, gpus))


def finetune_lines(planner: Planner) -> list[str]:
    """A row per (finetune entry, guided model): what it trains on, the tokens trained, its GPU time."""
    config, entries = planner.config, finetune_entries(planner.config)
    if not entries:
        return []
    lines = ["", f"Fine-tuning (stage finetune; prompts of {planner.prompt} tokens assumed); GPU time on one "
                 f"{planner.hw.name}:", f"  {'entry/model':<34}{'algorithm':<11}{'trained':>9}  data / GPU time"]
    for name, entry in entries.items():
        if entry["algorithm"] == "dpo":
            data = f"{_count(_pairs(config, entry.get('pairs', {})))} pairs x {entry.get('epochs', 1)} epoch(s)"
        else:
            rows = entry["batch_size"] * entry.get("generations_per_prompt", 1)
            data = f"{entry['steps']} steps x {rows} rollouts"
        tuning = "LoRA" if entry.get("lora") else "full"
        for model in config["generate"]["large_models"]:
            tokens, seconds = planner.finetune(entry, model)
            lines.append(f"  {f'{name}/{model}':<34}{entry['algorithm'] + ' ' + tuning:<11}{_count(tokens):>9}  "
                         f"{data} / {_duration(seconds)}")
    return lines


def finetune_warnings(planner: Planner, gpus: int = 1) -> list[str]:
    """A line per fine-tuning job whose weights (and training state) do not fit the memory it gets."""
    config, hw, lines = planner.config, planner.hw, []
    spread = gpus if config.get("device_map") == "auto" else 1
    for name, entry in finetune_entries(config).items():
        for model in config["generate"]["large_models"]:
            need = planner.finetune_weights(entry, model)
            if need is None or need <= spread * hw.memory:
                continue
            held = f"{gpus} × {hw.name}" if spread > 1 else f"one {hw.name}"
            how = "LoRA on the frozen bf16 weights" if entry.get("lora") else "full fine-tuning (float32 state)"
            lines.append(f"warning: finetune {name} of {model} does not fit {held}: {how} holds {need / 1e9:.1f} GB "
                         f"(activations come on top); it fits {_cards_for(need, hw)}.")
    return lines


def _cards_for(need: float, hw: Hardware) -> str:
    """The cards that hold ``need`` bytes: one of a larger kind, or enough of ``hw`` under device_map: auto."""
    cards = [f"one {other.name} (--gpu {key})" for key, other in HARDWARE.items() if need <= other.memory]
    n = math.ceil(need / hw.memory)
    return " or ".join([*cards, f"{n} × {hw.name} with device_map: auto (--gpus {n})"])


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
        lines.append(f"warning: {len(over)} generate job(s) of {model} do not fit {held}: "
                     f"{', '.join(job[1] for job in over)}. The largest, {method}, loads {need / 1e9:.1f} GB of "
                     f"weights in bf16 ({parts} GB; the KV cache and activations come on top); "
                     f"it fits {_cards_for(need, hw)}.")
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
