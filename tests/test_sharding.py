"""Sharded generation: shards cut on batch boundaries merge into exactly the unsharded output; a shard
killed while writing leaves nothing a rerun or the merge would accept; the DAG reruns only what is missing."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import toy_generation
from tests.helpers.pipeline_runs import RUN_TIMEOUT
from valueguide.artifacts import ArtifactError
from valueguide import generate as stage
from valueguide.generate import run_generate
from valueguide.decoding.shards import merge_shards, shard_path, shard_rows

ROOT = Path(__file__).resolve().parents[1]


def test_shards_are_contiguous_runs_of_whole_batches():
    # 10 prompts in batches of 3 -> batches [0:3) [3:6) [6:9) [9:10)
    assert [shard_rows(10, 3, i, 2) for i in range(2)] == [(slice(0, 6), 0), (slice(6, 10), 2)]
    assert [shard_rows(10, 3, i, 3) for i in range(3)] == [(slice(0, 3), 0), (slice(3, 6), 1), (slice(6, 10), 2)]
    assert shard_rows(10, 3, 0, 1) == (slice(0, 10), 0)
    with pytest.raises(ValueError, match="lower generate.shards"):
        shard_rows(10, 3, 0, 5)
    assert shard_path("g/test/large/ivg.parquet", 1, 3) == Path("g/test/large/ivg.shard1of3.parquet")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy_generation.build(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def fixed_clock(monkeypatch):
    """Wall time is the one measured column; a clock that ticks 1 s per reading makes it reproducible."""
    ticks = itertools.count()
    monkeypatch.setattr(stage.time, "perf_counter", lambda: float(next(ticks)))


def _generate(world, method, out, shard=(0, 1)):
    run_generate(toy_generation.config(), "large", method, [(world / "prompts.parquet", out)], world_dir=world,
                 value_path=world / "value", tuned_path=world / "tuned", shard=shard)


@pytest.mark.parametrize("method", ["base", "ivg", "bon_gold"])
def test_merged_shards_are_byte_identical_to_the_unsharded_run(world, tmp_path, method, fixed_clock):
    whole = tmp_path / "whole" / f"{method}.parquet"
    _generate(world, method, whole)
    merged = tmp_path / "sharded" / f"{method}.parquet"
    for i in range(3):  # 7 prompts, batches of 2 -> 4 batches -> shards of 1, 1, 2 batches
        _generate(world, method, shard_path(merged, i, 3), shard=(i, 3))
    assert pd.read_parquet(shard_path(merged, 2, 3)).prompt_id.tolist() == [4, 5, 6]
    merge_shards(merged, 3)
    assert merged.read_bytes() == whole.read_bytes()
    assert pd.read_parquet(merged).prompt_id.tolist() == list(range(len(toy_generation.PROMPTS)))


class Killed(BaseException):
    """What a SIGTERM/SIGKILL looks like to the writer: the write stops halfway."""


def test_a_shard_killed_mid_write_leaves_nothing_a_rerun_accepts(world, tmp_path, monkeypatch):
    out = tmp_path / "base.parquet"
    _generate(world, "base", shard_path(out, 0, 2), shard=(0, 2))
    killed = shard_path(out, 1, 2)
    real_to_parquet = pd.DataFrame.to_parquet

    def die_halfway(df, path, **kwargs):
        real_to_parquet(df, path, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:50])  # truncated, then the job dies
        raise Killed

    monkeypatch.setattr(pd.DataFrame, "to_parquet", die_halfway)
    with pytest.raises(Killed):
        _generate(world, "base", killed, shard=(1, 2))
    monkeypatch.undo()
    assert not killed.exists() and sorted(p.name for p in tmp_path.iterdir()) == [shard_path(out, 0, 2).name]
    with pytest.raises(ArtifactError, match="missing artifact"):
        merge_shards(out, 2)
    assert not out.exists()
    _generate(world, "base", killed, shard=(1, 2))  # the rerun of the killed shard
    assert merge_shards(out, 2).prompt_id.tolist() == list(range(len(toy_generation.PROMPTS)))


def test_merge_refuses_shards_that_overlap(tmp_path):
    out = tmp_path / "m.parquet"
    for i in range(2):
        pd.DataFrame({"prompt_id": [0, 1]}).to_parquet(shard_path(out, i, 2))
    with pytest.raises(ArtifactError, match="repeat prompts"):
        merge_shards(out, 2)
    assert not out.exists()


# --- the DAG --------------------------------------------------------------------------------------

def _snakemake(workdir: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(workdir / "datasets-cache")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), *args, "-s", str(ROOT / "Snakefile"), "--directory",
         str(workdir), "--cores", "2", "--configfile", str(workdir / "toy.yaml")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _planned(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


def toy_run_config(world: Path, results: Path, prompts_json: Path) -> dict:
    """config.yaml with the toy models as local folders and the prompts as a local JSON dataset: no world jobs."""
    dataset = {"name": "json", "data_files": str(prompts_json), "split": "train", "columns": {"prompt": "prompt"}}
    return {"results_dir": str(results), "world": None, "evaluate": {"alpaca": None},
            "prompts": {"source": "hub", "n_train": 7, "n_test": 5, "hub": {"train": dataset, "test": dataset}},
            "models": {name: {"path": str(world / "models" / name), "template": "{prompt}"}
                       for name in ("small", "large")},
            "reward_model": str(world / "models" / "reward"), "sample": {"policy": "small"},
            "fit_value": {"backbone": str(world / "models" / "small")}, "fit_implicit": {"untuned": "small"},
            "fit_classifier": {"backbone": str(world / "models" / "small")},
            # config.yaml's FUDGE and fine-tuned baselines: not what sharding is about
            "generate": {"large_models": ["large"], "batch_size": 2, "shards": 2, "max_new_tokens": 5,
                         "methods": {"fudge": None, "dpo": None, "rl": None}}}


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_the_dag_generates_shards_merges_them_and_reruns_only_a_missing_shard(world, tmp_path):
    prompts_json = tmp_path / "prompts.json"
    pd.read_parquet(world / "prompts.parquet")[["prompt"]].to_json(prompts_json, orient="records", lines=True)
    results = tmp_path / "results"
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(toy_run_config(world, results, prompts_json)))
    target = results / "generations" / "test" / "large" / "base.parquet"
    assert _planned(_snakemake(tmp_path, "-n", str(target))) == {"config_slice": 2, "prompts": 1, "generate": 2,
                                                                 "merge_shards": 1}
    _snakemake(tmp_path, str(target))
    shards = [shard_path(target, i, 2) for i in range(2)]
    merged = pd.read_parquet(target)
    assert merged.prompt.tolist() == toy_generation.PROMPTS[:5]
    assert [len(pd.read_parquet(s)) for s in shards] == [2, 3]  # 3 batches: 1 + 2
    assert "Nothing to be done" in _snakemake(tmp_path, "-n", str(target))

    shards[1].unlink()  # shard 1 was killed: no file (writes are atomic), so no merged file either
    target.unlink()
    assert _planned(_snakemake(tmp_path, "-n", str(target))) == {"generate": 1, "merge_shards": 1}
    _snakemake(tmp_path, str(target))
    pd.testing.assert_frame_equal(pd.read_parquet(target).drop(columns="wall_time"),
                                  merged.drop(columns="wall_time"))
