"""Stage finetune: the guided model tuned, the baselines that guidance is measured against.

Each entry of the config's ``finetune`` section names its algorithm:

- ``dpo``: DPO (trl) on preference pairs drawn from the frozen base policy's samples, the data the
  values are fitted on (``implicit.pairs``), trained as stage fit_implicit trains its small pair
  (``implicit.dpo.train_dpo``: token ids, a tiny-world model in its compact form);
- ``rl``: RLOO (trl) online against the gold reward model, with a KL penalty to the frozen model, on
  the train split's prompts through the model's template (trl 1.x ships no PPO: docs/FIDELITY.md).

The tuned model is written into ``out_dir`` atomically (``artifacts.atomic_dir``), ``metrics.json``
with it: a killed job leaves only a temporary sibling, which the rerun removes, never a model that
counts as done. With ``checkpoint_steps`` (long trainings: the paper configs) trl saves a checkpoint
that often beside it, and the rerun goes on from the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from .artifacts import atomic_dir, read_parquet, write_json
from .implicit.dpo import SAMPLE_COLUMNS, in_vocabulary_of, lora_config, train_dpo, trainer_folder
from .implicit.pairs import train_and_heldout_pairs
from .models import LoadOptions, load_causal_lm, load_options, load_tokenizer
from .reward import RewardModel
from .seeding import derive_seed, seed_everything
from .templates import render_for
from .texts import decode_batch

log = logging.getLogger(__name__)
ALGORITHMS = ("dpo", "rl")


def run_finetune(config: dict, name: str, model_name: str, data_path, out_dir, world_dir=None) -> dict:
    """Tune ``models[model_name]`` by the entry ``finetune[name]`` and save it in ``out_dir``; returns the
    metrics. ``data_path``: the samples (dpo) or the train split's prompts (rl)."""
    entries = config.get("finetune") or {}
    if name not in entries:
        raise ValueError(f"finetune entry {name!r} is not configured (has {sorted(entries) or 'none'})")
    if model_name not in config["models"]:
        raise ValueError(f"{model_name!r} is not a key of models ({sorted(config['models'])})")
    entry, model = entries[name], config["models"][model_name]
    if entry["algorithm"] not in ALGORITHMS:
        raise ValueError(f"finetune.{name}.algorithm must be one of {ALGORITHMS}; got {entry['algorithm']!r}")
    options = load_options(config)
    seed = derive_seed(config["seed"], "finetune", name, model_name)
    seed_everything(seed)
    tokenizer = load_tokenizer(model["path"], world_dir, options)
    train = _dpo if entry["algorithm"] == "dpo" else _rl
    checkpoints = _checkpoints(Path(out_dir), config, model_name, data_path, entry.get("checkpoint_steps"))
    with atomic_dir(out_dir) as tmp:
        start = time.perf_counter()
        metrics = {"name": name, "model": model_name, **entry}
        metrics.update(train(config, entry, model, tokenizer, data_path, seed, tmp, world_dir, options, checkpoints))
        metrics["train_time_s"] = time.perf_counter() - start
        write_json(metrics, tmp / "metrics.json")
    if checkpoints is not None:
        shutil.rmtree(checkpoints[0], ignore_errors=True)
    log.info("finetune %s of %s: %.1f s -> %s", name, model_name, metrics["train_time_s"], out_dir)
    return metrics


def _checkpoints(out_dir: Path, config: dict, model_name: str, data_path, every: int | None):
    """With ``checkpoint_steps``: the folder beside ``out_dir`` where trl keeps the job's last checkpoint,
    named by everything the training reads (the config, the model, the data file's bytes), so a rerun
    resumes only the same training; a folder of other settings is removed."""
    if not every:
        return None
    key = hashlib.sha256(json.dumps([config, model_name], sort_keys=True).encode())
    with open(data_path, "rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            key.update(block)
    folder = out_dir.parent / f".{out_dir.name}.checkpoints-{key.hexdigest()[:16]}"
    for stale in out_dir.parent.glob(f".{out_dir.name}.checkpoints-*"):
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder, every


def _dpo(config: dict, entry: dict, model: dict, tokenizer, samples_path, seed: int, save_dir: Path, world_dir,
         options: LoadOptions, checkpoints) -> dict:
    samples = read_parquet(samples_path, required=SAMPLE_COLUMNS)
    samples = in_vocabulary_of(tokenizer, samples, config, world_dir, options, "finetune")
    # one set of pairs for every entry and model: their differences are the settings', not the data's
    rng = np.random.default_rng(derive_seed(config["seed"], "finetune", "pairs"))
    pairs, _ = train_and_heldout_pairs(samples, entry["pairs"]["per_prompt"], entry["pairs"]["selection"], 0.0, rng)
    settings = {**entry, "lora": entry.get("lora")}
    return {"n_pairs": len(pairs),
            **train_dpo(pairs, tokenizer, model, settings, seed, save_dir, world_dir, options, progress=True,
                        checkpoints=checkpoints)}


def _rl(config: dict, entry: dict, model: dict, tokenizer, prompts_path, seed: int, save_dir: Path, world_dir,
        options: LoadOptions, checkpoints) -> dict:
    """RLOO with trl: ``generations_per_prompt`` rollouts per prompt, each rewarded by the gold reward of
    prompt + response text (as stage evaluate_reward scores them) less ``kl_coef`` times its log-ratio to
    the frozen model; full fine-tuning, or a LoRA adapter merged into the saved model."""
    # trl is slow to import; the other stages import this package without needing it
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    class TemplatedRLOOTrainer(RLOOTrainer):
        """Prompts rendered through the model's template, tokenised as the sampler and the decoders do
        (no special tokens added: a chat template writes its own)."""

        def _tokenize_prompts(self, prompts: list):
            return self.processing_class(text=prompts, add_special_tokens=False)["input_ids"], None, {}

    prompts = read_parquet(prompts_path, required=["prompt_id", "prompt"])
    if prompts.empty:
        raise ValueError(f"{prompts_path} holds no prompts to train on")
    reward = RewardModel.load(config["reward_model"], world_dir, options)

    def gold_reward(prompts, completions, completion_ids, text, **_):
        return reward.score([p + r for p, r in zip(text, decode_batch(tokenizer, completion_ids))]).tolist()

    lora = entry.get("lora")
    weights = LoadOptions(options.device, options.dtype if lora else "float32", options.device_map,
                          options.trust_remote_code, options.allow_bin_weights)
    policy = load_causal_lm(model["path"], world_dir, weights)
    dataset = Dataset.from_dict({"prompt": [render_for(tokenizer, model["template"], p) for p in prompts["prompt"]],
                                 "text": prompts["prompt"].tolist()})
    cuda = options.device.startswith("cuda")
    steps = entry["steps"]
    with trainer_folder(checkpoints) as (saving, resume):
        args = RLOOConfig(
            **saving, beta=entry["kl_coef"], learning_rate=entry["lr"], max_steps=steps,
            per_device_train_batch_size=entry["batch_size"], num_generations=entry["generations_per_prompt"],
            max_completion_length=config["sample"]["max_new_tokens"], temperature=entry.get("temperature", 1.0),
            top_k=0, top_p=1.0, seed=seed, data_seed=seed, bf16=cuda, use_cpu=not cuda,
            gradient_checkpointing=bool(lora), disable_dropout=True, trust_remote_code=options.trust_remote_code,
            report_to="none", logging_steps=max(1, steps // 10), log_level="info",
            dataloader_num_workers=0, optim="adamw_torch_fused",
        )
        trainer = TemplatedRLOOTrainer(model=policy, reward_funcs=gold_reward, args=args, train_dataset=dataset,
                                       processing_class=tokenizer, peft_config=lora_config(lora) if lora else None)
        result = trainer.train(resume_from_checkpoint=resume)
    tuned = trainer.model.merge_and_unload() if lora else trainer.model
    tuned.config.use_cache = True
    tuned.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    logged = [e for e in trainer.state.log_history if "reward" in e]
    return {"train_loss": result.training_loss, "train_steps": result.global_step,
            "reward_first_log": logged[0]["reward"] if logged else None,
            "reward_last_log": logged[-1]["reward"] if logged else None,
            "kl_last_log": logged[-1].get("kl") if logged else None}
