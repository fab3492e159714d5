"""The DAG on the tiny config: it runs end to end, caches, and reruns exactly what a change touches."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
UPSTREAM_OF_SAMPLE = {"world_corpus", "world_lm", "world_reward", "prompts"}


def _snakemake(workdir: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
         "--configfile", str(workdir / "override.yaml"), *args],
        capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _planned_jobs(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def _write_override(workdir: Path, change: dict | None = None) -> None:
    """The tiny config with results in ``workdir``, plus ``change`` (merged like a config file)."""
    from valueguide.config import deep_merge

    override = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    override["results_dir"] = str(workdir / "results")
    (workdir / "override.yaml").write_text(yaml.safe_dump(deep_merge(override, change or {})))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    _write_override(workdir)
    _snakemake(workdir)
    return workdir


def test_the_dag_writes_every_artifact(workdir):
    results = workdir / "results"
    for path in ["world/summary.json", "samples/gpt2-small.parquet", "prompts/train.parquet",
                 "report/summary.md", "report/tables.md", "report/reward_by_method.png",
                 "world/models/mixtral/model.safetensors", "value/metrics.json", "implicit/metrics.json",
                 "generations/test/mistral/ivg.parquet", "generations/alpaca/mistral/base.parquet",
                 "scores/reward_metrics.csv", "alpaca_eval/metrics.csv",
                 "alpaca_eval/mistral/ivg/model_outputs.json"]:
        assert (results / path).exists(), path
    summary = (results / "report" / "summary.md").read_text()
    assert "reward mean" in summary and "Gold reward model" in summary
    tables = (results / "report" / "tables.md").read_text()
    assert "ivg" in tables and "mistral" in tables
    for stage in ["sample", "world", "prompts", "fit_value", "fit_implicit", "generate", "evaluate", "report"]:
        assert list((results / "logs" / stage).glob("*.log")), stage
        assert list((results / "benchmarks" / stage).glob("*.tsv")), stage


def test_a_second_run_does_nothing(workdir):
    out = _snakemake(workdir, "-n")
    assert "Nothing to be done" in out


def test_a_sampling_change_reruns_exactly_sample_and_downstream(workdir):
    _write_override(workdir, {"sample": {"temperature": 0.9}})
    planned = _planned_jobs(_snakemake(workdir, "-n"))
    assert planned.get("sample") == 1
    assert not UPSTREAM_OF_SAMPLE & set(planned)
    assert set(planned) == {"sample", "world_summary", "fit_value", "fit_implicit", "generate",
                            "evaluate_reward", "evaluate_alpaca", "report", "all"}
    # every method of the tiny config reads a fitted value except base, whose generations stay cached
    assert planned["generate"] == 6


def test_a_decoding_change_reruns_generation_but_no_fit(workdir):
    _write_override(workdir, {"generate": {"methods": {"ivg": {"chunk": {"W": 2}}}}})
    planned = _planned_jobs(_snakemake(workdir, "-n"))
    assert planned.get("generate") == 1
    assert not {"sample", "fit_value", "fit_implicit", *UPSTREAM_OF_SAMPLE} & set(planned)
