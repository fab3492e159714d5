"""What a paper-scale run takes from the Hugging Face hub: prompt datasets and model snapshots.

Both fail with an error that names what is missing and how to get it, instead of a stack trace from
inside ``datasets`` or ``huggingface_hub``. ``fetch`` runs first in the DAG (rule fetch), so an
offline run with an uncached model stops before any GPU work. Heavy imports stay inside functions:
the Snakefile imports this module to decide which jobs exist.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .specs import WORLD_PREFIX, ModelNotFoundError, is_local_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# Config, tokenizer and weight files; "model*" skips duplicate checkpoints such as Mistral's consolidated.*
SMALL_FILES = ["*.json", "*.model", "*.txt", "*.tiktoken"]
WEIGHTS = {"safetensors": "model*.safetensors", "bin": "pytorch_model*.bin"}
GAMED_REPO, GAMED_FILE = "tatsu-lab/alpaca_eval", "df_gamed.csv"


class DatasetUnavailableError(FileNotFoundError):
    """A prompt dataset could not be loaded from the hub or the local datasets cache."""


def is_hub_id(spec: str) -> bool:
    """A spec that ``resolve_spec`` would hand to ``from_pretrained`` as a hub id (not world:, not a folder)."""
    return not (spec.startswith(WORLD_PREFIX) or is_local_path(spec))


def hub_ids(specs) -> list[str]:
    return sorted({s for s in specs if is_hub_id(s)})


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# --- prompt datasets ---------------------------------------------------------------------------

def _describe(spec: dict) -> str:
    parts = [spec["name"], spec.get("config"), spec.get("data_files"), f"split {spec['split']}"]
    return " ".join(str(p) for p in parts if p)


def load_prompt_split(spec: dict, n: int) -> pd.DataFrame:
    """``n`` prompts (``prompt_id``, ``prompt``, optional ``reference``) from a hub dataset.

    Order: the split as stored, shuffled with ``shuffle_seed`` (datasets' own permutation, so a seed
    selects the same prompts as the authors' ``Dataset.shuffle(seed)``), cut after the last
    ``prompt_through_last`` (a dialogue up to its final answer), repeats dropped when ``dedupe``, then
    the first ``n``. ``prompt_id`` is the position in that order: for AlpacaEval (no shuffle) it is the
    instruction's index, which the length-controlled GLM looks up.
    """
    import datasets
    import pandas as pd

    try:
        ds = datasets.load_dataset(spec["name"], spec.get("config"), split=spec["split"],
                                   data_files=spec.get("data_files"))
    except Exception as exc:  # datasets raises ConnectionError, FileNotFoundError, httpx errors, ...
        cause = f"{type(exc).__name__}: {exc}".rstrip(": ")
        files = spec.get("data_files")
        if files and "://" not in files:
            raise DatasetUnavailableError(
                f"cannot read the local prompt file {files} as {spec['name']}: {cause}") from exc
        raise DatasetUnavailableError(
            f"cannot load the prompt dataset {_describe(spec)}"
            f"{' (HF_HUB_OFFLINE=1: only the local cache is read)' if offline() else ''}. Load it once with "
            f"network access (HF_HUB_OFFLINE=0 snakemake ... prompts) so it lands in the datasets cache "
            f"({datasets.config.HF_DATASETS_CACHE}). Cause: {cause}") from exc
    columns = spec["columns"]
    if any("." in c and c not in ds.column_names for c in columns.values()):
        ds = ds.flatten()  # struct fields become "a.b" columns
    missing = sorted(set(columns.values()) - set(ds.column_names))
    if missing:
        raise DatasetUnavailableError(f"{_describe(spec)} has no column(s) {missing}; has {ds.column_names}")
    ds = ds.select_columns(list(dict.fromkeys(columns.values())))
    if spec.get("shuffle_seed") is not None:
        ds = ds.shuffle(seed=spec["shuffle_seed"])
    frame = pd.DataFrame({ours: ds[theirs] for ours, theirs in columns.items()})
    if spec.get("prompt_through_last"):
        frame = _through_last(frame, spec["prompt_through_last"], spec)
    if spec.get("dedupe"):
        frame = frame.drop_duplicates("prompt")
    if len(frame) < n:
        log.warning("%s holds %d prompts, fewer than the %d asked for: using all", _describe(spec), len(frame), n)
    frame = frame.head(n).reset_index(drop=True)
    frame.insert(0, "prompt_id", range(len(frame)))
    return frame


def _through_last(frame: pd.DataFrame, marker: str, spec: dict) -> pd.DataFrame:
    """Each prompt up to and including the last ``marker`` (Anthropic HH: the dialogue before its final
    answer, ``marker`` = "\\n\\nAssistant:"); rows without the marker are dropped, and counted in the log."""
    cut = frame.prompt.str.rfind(marker)
    kept = frame[cut >= 0].copy()
    kept["prompt"] = [text[:end + len(marker)] for text, end in zip(kept.prompt, cut[cut >= 0])]
    if len(kept) < len(frame):
        log.warning("%s: %d of %d prompts hold no %r: dropped", _describe(spec), len(frame) - len(kept), len(frame),
                    marker)
    return kept


# --- model snapshots and other files a run reads ------------------------------------------------

def _weights_pattern(repo: str, allow_bin: bool) -> str:
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo)
    if any(fnmatch.fnmatch(f, WEIGHTS["safetensors"]) for f in files):
        return WEIGHTS["safetensors"]
    if not allow_bin:
        raise FileNotFoundError(f"{repo} has no safetensors weights, only pickled ones: set allow_bin_weights: true "
                                "to load them (with torch's weights_only)")
    return WEIGHTS["bin"]


def snapshot(repo: str, allow_bin: bool = False) -> str:
    """The local snapshot folder of a hub model: downloaded (config, tokenizer, one copy of the weights)
    when online, looked up in the cache when offline."""
    from huggingface_hub import snapshot_download

    if offline():
        path = snapshot_download(repo, local_files_only=True)
    else:
        path = snapshot_download(repo, allow_patterns=[*SMALL_FILES, _weights_pattern(repo, allow_bin)])
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"the cached snapshot {path} has no config.json")
    return path


def _gamed_file(path: str) -> None:
    """alpaca_eval's df_gamed.csv at ``path``, copied from the hub dataset when online."""
    from huggingface_hub import hf_hub_download

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(hf_hub_download(GAMED_REPO, GAMED_FILE, repo_type="dataset"), path)


def fetch(config: dict) -> dict:
    """Everything a run reads from outside, checked (offline) or downloaded (online) up front.

    ``config`` is the fetch slice: ``hub_models``, ``gamed_path``, ``judge``. Every problem is
    collected and reported at once, so one look tells what to fetch.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    problems, models = [], {}
    for repo in config["hub_models"]:
        try:
            models[repo] = snapshot(repo, config.get("allow_bin_weights", False))
        except LocalEntryNotFoundError:
            problems.append(f"model {repo}: not in the local cache {constants.HF_HUB_CACHE}")
        except Exception as exc:  # HTTP errors online (a typo, a gated model without HF_TOKEN), a bad snapshot
            problems.append(f"model {repo}: {type(exc).__name__}: {exc}")
    gamed = config.get("gamed_path")
    if gamed and not Path(gamed).exists():
        where = f"evaluate.alpaca.gamed_path {gamed} (alpaca_eval's {GAMED_FILE}, hub dataset {GAMED_REPO})"
        if offline():
            problems.append(f"{where}: not on disk")
        else:
            try:
                _gamed_file(gamed)
            except Exception as exc:  # HTTP errors
                problems.append(f"{where}: {exc}")
    if config.get("judge") == "gpt4_turbo":
        from .evaluate import API_KEY_VAR

        if not os.environ.get(API_KEY_VAR, "").strip():
            problems.append(f"judge gpt4_turbo: the environment variable {API_KEY_VAR} is not set "
                            "(export it, or use evaluate.alpaca.judge: local)")
    if problems:
        how = ("HF_HUB_OFFLINE=1, so only the local cache was read: run the fetch rule once with network "
               "access (HF_HUB_OFFLINE=0 snakemake ... fetch)" if offline() else "check the names and your access")
        raise ModelNotFoundError("missing before the run could start (" + how + "):\n  " + "\n  ".join(problems))
    return {"models": models, "gamed_path": gamed}
