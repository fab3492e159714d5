"""The instruction setting's DAG on the tiny config: the Tulu pair and a gpt2 value guide mistral
across vocabularies, every method; and its world is the one the sentiment setting reads.

A module of its own, so that the test run can give it a worker of its own (``make test``)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.pipeline_runs import RUN_TIMEOUT, planned_jobs, snakemake, write_override

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT)]
WORLD_RULES = {"world_corpus", "world_lm", "world_reward"}


@pytest.fixture(scope="module")
def instruction(tmp_path_factory) -> Path:
    """The instruction setting (config/tiny_instruction.yaml, tiny), building its world as it goes, its
    jobs forked from a warm process as `make run` runs them."""
    workdir = tmp_path_factory.mktemp("instruction")
    write_override(workdir, {"world": {"dir": str(workdir / "world")}}, setting="config/tiny_instruction.yaml")
    out = snakemake(workdir, warm=True)
    assert re.search(r"rule world_lm:", out), "no world was built"
    return workdir


def test_the_instruction_setting_guides_across_vocabularies(instruction):
    """Tulu (Llama-2's vocabulary) and a gpt2 value guide mistral (Mistral's), every method, in the DAG."""
    results = instruction / "results"
    for path in ["samples/tulu.parquet", "value/metrics.json", "implicit/pooled_vocabulary.json",
                 "alpaca_eval/metrics.csv", "report/tables.md"]:
        assert (results / path).exists(), path
    for method in ["base", "bon", "eft", "vas", "cbs_implicit", "cbs_explicit", "ivg"]:
        gens = pd.read_parquet(results / "generations" / "alpaca" / "mistral" / f"{method}.parquet")
        assert len(gens) == 6 and (gens.n_tokens > 0).all()
        log = (results / "logs" / "generate" / f"mistral-{method}.log").read_text()
        small = {"base": [], "bon": ["value"], "vas": ["value"], "cbs_explicit": ["value"],
                 "eft": ["tuned", "untuned"], "cbs_implicit": ["tuned", "untuned"], "ivg": ["tuned", "untuned", "value"]}
        assert (f"read as text in their own tokens: {', '.join(small[method])}" in log) == bool(small[method]), method
        token_level = {"eft": "tuned", "ivg": "tuned", "vas": "value"}.get(method)
        assert token_level or not any(json.loads(c) for c in gens.candidate_tokens), method  # only token guides score candidates


def test_the_sentiment_setting_reads_the_world_the_instruction_setting_built(instruction, tmp_path):
    """Two settings that name one world folder share it: the other one plans no world job."""
    write_override(tmp_path, {"world": {"dir": str(instruction / "world")}})
    planned = planned_jobs(snakemake(tmp_path, "-n"))
    assert "sample" in planned and not WORLD_RULES & set(planned), planned
