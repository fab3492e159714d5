"""Stage fit_implicit: a tuned/untuned small-model pair whose log-ratio is the implicit value ψ.

Mode ``train`` DPO-tunes the untuned model on preference pairs from the samples and saves the tuned
model in ``out_dir``; mode ``pretrained`` checks an existing pair (e.g. tulu-2-dpo-7b / tulu-2-7b)
and trains nothing. Both write ``tuned.json`` (read it with :func:`tuned_spec`) and ``metrics.json``
with the held-out pairwise accuracy of the implicit reward.
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import atomic_dir, read_json, read_parquet, write_json
from ..models import LoadOptions, load_causal_lm, load_options, load_tokenizer, resolve_spec, same_vocabulary
from ..world.pooled import Pooling, compact, expand_like
from ..seeding import derive_seed, seed_everything
from .pairs import train_and_heldout_pairs
from .score import encode_prompts, encode_responses, pairwise_accuracy, response_logprobs

SAMPLE_COLUMNS = ["prompt_id", "prompt", "response", "response_ids", "reward"]
MODES = ("train", "pretrained")
POINTER = "tuned.json"


def tuned_spec(out_dir) -> str:
    """The spec of the tuned model a fit_implicit folder stands for: the folder itself after training."""
    pointer = read_json(Path(out_dir) / POINTER)
    return pointer["tuned"] or str(out_dir)


def run_fit_implicit(config: dict, samples_path, out_dir, world_dir=None) -> dict:
    """Fit (or check) the implicit value pair and write ``out_dir`` atomically; returns the metrics."""
    fic = config["fit_implicit"]
    if fic["mode"] not in MODES:
        raise ValueError(f"fit_implicit.mode must be one of {MODES}; got {fic['mode']!r}")
    if fic["mode"] == "pretrained" and not fic.get("tuned"):
        raise ValueError("fit_implicit.mode 'pretrained' needs fit_implicit.tuned: the spec of the tuned model")
    untuned = _model_entry(config, fic["untuned"])
    options = load_options(config)
    seed = derive_seed(config["seed"], "fit_implicit")
    seed_everything(seed)
    tokenizer = load_tokenizer(untuned["path"], world_dir, options)
    if fic["mode"] == "pretrained":
        _check_vocabulary(tokenizer, load_tokenizer(fic["tuned"], world_dir, options), fic)

    samples = read_parquet(samples_path, required=SAMPLE_COLUMNS)
    samples = in_vocabulary_of(tokenizer, samples, config, world_dir, options, "fit_implicit")
    rng = np.random.default_rng(derive_seed(config["seed"], "fit_implicit", "pairs"))
    train, heldout = train_and_heldout_pairs(samples, fic["pairs"]["per_prompt"], fic["pairs"]["selection"],
                                             fic["heldout_fraction"], rng)

    with atomic_dir(out_dir) as tmp:
        metrics = {"mode": fic["mode"], "beta": fic["beta"], "n_train_pairs": len(train),
                   "n_heldout_pairs": len(heldout)}
        if fic["mode"] == "train":
            start = time.perf_counter()
            metrics.update(train_dpo(train, tokenizer, untuned, fic, seed, tmp, world_dir, options))
            metrics["train_time_s"] = time.perf_counter() - start
            tuned = str(tmp)
        else:
            tuned = fic["tuned"]
        metrics.update(_heldout_metrics(heldout, tokenizer, untuned, tuned, fic, world_dir, options))
        write_json({"mode": fic["mode"], "tuned": None if fic["mode"] == "train" else fic["tuned"],
                    "untuned": untuned["path"], "template": untuned["template"]}, tmp / POINTER)
        write_json(metrics, tmp / "metrics.json")
    return metrics


def _model_entry(config: dict, key: str) -> dict:
    if key not in config["models"]:
        raise ValueError(f"fit_implicit.untuned {key!r} is not a key of `models` ({sorted(config['models'])})")
    return config["models"][key]


def _check_vocabulary(untuned_tokenizer, tuned_tokenizer, fic: dict) -> None:
    if not same_vocabulary(untuned_tokenizer, tuned_tokenizer):
        raise ValueError(
            f"tuned model {fic['tuned']!r} and untuned model {fic['untuned']!r} do not share a vocabulary: "
            "the implicit value log π*(a|s) − log π(a|s) needs both to score the same tokens"
        )


def in_vocabulary_of(tokenizer, samples: pd.DataFrame, config: dict, world_dir, options, stage: str) -> pd.DataFrame:
    """Samples whose ``response_ids`` are in ``tokenizer``'s vocabulary, re-tokenising the text when needed."""
    policy_key = config.get("sample", {}).get("policy")
    if policy_key not in config["models"]:
        raise ValueError(f"{stage} needs sample.policy and its `models` entry: the samples' token ids are in "
                         "the vocabulary of the model that drew them")
    policy = config["models"][policy_key]
    policy_tokenizer = load_tokenizer(policy["path"], world_dir, options)
    if same_vocabulary(tokenizer, policy_tokenizer):
        return samples
    eos = policy_tokenizer.eos_token_id
    ended = [len(ids) > 0 and int(ids[-1]) == eos for ids in samples["response_ids"]]
    return samples.assign(response_ids=encode_responses(tokenizer, samples["response"].tolist(), ended))


def lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                      lora_dropout=lora.get("dropout", 0.0), target_modules=lora.get("target_modules"))


@contextmanager
def trainer_folder(checkpoints: tuple[Path, int] | None):
    """A trl trainer's output folder and save settings, and the checkpoint it resumes from: a scratch
    folder that keeps nothing, or (``checkpoints = (folder, every)``) ``folder``, which keeps the last
    of the checkpoints saved every ``every`` steps, for a rerun after a kill to go on from. Inside it,
    what the trainer prints (its loss logs go to stdout, the console of a pipeline run) goes to stderr,
    the job's log."""
    with redirect_stdout(sys.stderr):
        if checkpoints is None:
            with tempfile.TemporaryDirectory() as scratch:
                yield {"output_dir": scratch, "save_strategy": "no"}, None
            return
        from transformers.trainer_utils import get_last_checkpoint

        folder, every = checkpoints
        folder.mkdir(parents=True, exist_ok=True)
        yield ({"output_dir": str(folder), "save_strategy": "steps", "save_steps": every, "save_total_limit": 1},
               get_last_checkpoint(str(folder)))


def train_dpo(pairs: pd.DataFrame, tokenizer, untuned: dict, fic: dict, seed: int, save_dir: Path, world_dir,
              options: LoadOptions, progress: bool = False, checkpoints: tuple[Path, int] | None = None) -> dict:
    """DPO with trl on token ids of the model ``untuned`` (a `models` entry): saves the (merged) tuned model
    and tokenizer into ``save_dir``. ``fic`` holds beta, lr, epochs, batch_size and lora (fit_implicit's, or a
    finetune entry's); ``progress`` shows trl's progress bar and loss logs (on stderr: the job's log);
    ``checkpoints``: see ``trainer_folder``."""
    # trl is slow to import; scoring and decoding import this package without needing it
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """DPO on pairs that are already token ids.

        The sampled response ids are the tokens ψ is summed over at decoding time; trl would
        re-tokenise the decoded text and append EOS to every response, including unfinished ones.
        """

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    cuda = options.device.startswith("cuda")
    # full fine-tuning keeps fp32 master weights under bf16 autocast; LoRA leaves the base in `dtype`
    weights = LoadOptions(options.device, options.dtype if fic["lora"] else "float32",
                          options.device_map, options.trust_remote_code)
    model = load_causal_lm(untuned["path"], world_dir, weights)
    ref_model = None if fic["lora"] else load_causal_lm(untuned["path"], world_dir, weights)
    columns = {"prompt_ids": encode_prompts(tokenizer, untuned["template"], pairs["prompt"].tolist()),
               "chosen_ids": pairs["chosen_ids"].tolist(), "rejected_ids": pairs["rejected_ids"].tolist()}
    # A tiny-world model trains in its compact form (exact: its unused tokens share one row, see
    # world.pooled), which costs the tokens it uses rather than the whole vocabulary.
    pooling = Pooling.load(resolve_spec(untuned["path"], world_dir))
    collator, full_config = None, model.config
    if pooling is not None:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        model, ref_model = compact(model, pooling), compact(ref_model, pooling) if ref_model is not None else None
        columns = {name: pooling.to_compact(rows) for name, rows in columns.items()}
        pad = pooling.index()[tokenizer.pad_token_id]
        model.config.pad_token_id = pad
        collator = DataCollatorForPreference(pad_token_id=pad)
    dataset = Dataset.from_dict(columns)
    with trainer_folder(checkpoints) as (saving, resume):
        args = DPOConfig(
            **saving, beta=fic["beta"], learning_rate=fic["lr"], num_train_epochs=fic["epochs"],
            per_device_train_batch_size=fic["batch_size"], seed=seed, data_seed=seed, bf16=cuda, use_cpu=not cuda,
            max_length=None, activation_checkpointing=bool(fic["lora"]), report_to="none",
            disable_tqdm=not progress, log_level="info" if progress else "warning", dataloader_num_workers=0,
            optim="adamw_torch_fused",
        )
        trainer = TokenizedDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset,
                                      processing_class=tokenizer, data_collator=collator,
                                      peft_config=lora_config(fic["lora"]) if fic["lora"] else None)
        result = trainer.train(resume_from_checkpoint=resume)
    tuned = trainer.model.merge_and_unload() if fic["lora"] else trainer.model
    if pooling is not None:
        tuned = expand_like(tuned, full_config, pooling)
        pooling.save(save_dir)
    tuned.config.use_cache = True
    tuned.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    logged = [entry for entry in trainer.state.log_history if "rewards/accuracies" in entry]
    return {"train_loss": result.training_loss, "train_steps": result.global_step,
            "train_reward_accuracy_last_log": logged[-1]["rewards/accuracies"] if logged else None}


def _heldout_metrics(heldout: pd.DataFrame, tokenizer, untuned: dict, tuned_target: str, fic: dict, world_dir,
                     options: LoadOptions) -> dict:
    """Pairwise accuracy against the true reward order on held-out prompts, tuned vs untuned."""
    if heldout.empty:
        return {"heldout_accuracy": None, "heldout_accuracy_untuned": None,
                "heldout_accuracy_untuned_logprob": None, "heldout_accuracy_gap_gt_1": None}
    prompt_ids = encode_prompts(tokenizer, untuned["template"], heldout["prompt"].tolist())
    prompts = prompt_ids + prompt_ids
    responses = heldout["chosen_ids"].tolist() + heldout["rejected_ids"].tolist()
    batch = fic["batch_size"]
    untuned_logps = response_logprobs(load_causal_lm(untuned["path"], world_dir, options), prompts, responses, batch)
    tuned_logps = response_logprobs(load_causal_lm(tuned_target, world_dir, options), prompts, responses, batch)
    n = len(heldout)
    implicit = fic["beta"] * (tuned_logps - untuned_logps)
    r_a, r_b = heldout["chosen_reward"].to_numpy(), heldout["rejected_reward"].to_numpy()
    wide = np.abs(r_a - r_b) > 1
    return {
        "heldout_accuracy": pairwise_accuracy(implicit[:n], implicit[n:], r_a, r_b),
        "heldout_accuracy_untuned": pairwise_accuracy(np.zeros(n), np.zeros(n), r_a, r_b),  # ψ ≡ 0 before tuning
        "heldout_accuracy_untuned_logprob": pairwise_accuracy(untuned_logps[:n], untuned_logps[n:], r_a, r_b),
        "heldout_accuracy_gap_gt_1": (pairwise_accuracy(implicit[:n][wide], implicit[n:][wide], r_a[wide], r_b[wide])
                                      if wide.any() else None),
    }
