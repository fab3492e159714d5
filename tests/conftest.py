"""Shared fixtures: a tiny world built once per test session, from tests/data/tiny.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from valueguide.heap import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
# Tiny models run fastest, and most reproducibly, on one thread; more threads only contend.
torch.set_num_threads(1)
# As every pipeline job does (valueguide.cli): freed buffers are reused, not faulted in again.
keep_freed_memory()
# The longest modules first: ``make test`` (and ``make test-fast``) runs modules on workers (pytest-xdist,
# --dist loadfile, in collection order), so these start at once and the short ones fill in around them.
LONGEST_FIRST = ("test_slurm.py", "test_pipeline.py", "test_pipeline_instruction.py", "test_sharding.py",
                 "test_text_stream.py", "test_paper_configs.py", "test_evaluate.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> dict:
    from valueguide.config import load_config

    config = load_config(ROOT / "config.yaml", ROOT / "tests" / "data" / "tiny.yaml")
    config["results_dir"] = str(tmp_path_factory.mktemp("results"))
    return config


@pytest.fixture(scope="session")
def tiny_world(tiny_config) -> Path:
    """A tiny world with the base policy and the gold reward (not the large models)."""
    from valueguide.world import build

    world = Path(tiny_config["results_dir"]) / "world"
    build.build_corpus(tiny_config, world)
    build.build_lm(tiny_config, world, "gpt2-small")
    build.build_reward(tiny_config, world)
    return world
