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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    override = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    override["results_dir"] = str(workdir / "results")
    (workdir / "override.yaml").write_text(yaml.safe_dump(override))
    _snakemake(workdir)
    return workdir


def test_the_dag_writes_every_artifact(workdir):
    results = workdir / "results"
    for path in ["world/summary.json", "samples/gpt2-small.parquet", "prompts/train.parquet",
                 "report/summary.md", "world/models/mixtral/model.safetensors"]:
        assert (results / path).exists(), path
    summary = (results / "report" / "summary.md").read_text()
    assert "reward mean" in summary and "Gold reward model" in summary
    for stage in ["sample", "world", "prompts", "report"]:
        assert list((results / "logs" / stage).glob("*.log")), stage
        assert list((results / "benchmarks" / stage).glob("*.tsv")), stage


def test_a_second_run_does_nothing(workdir):
    out = _snakemake(workdir, "-n")
    assert "Nothing to be done" in out


def test_a_sampling_change_reruns_exactly_sample_and_downstream(workdir):
    override = yaml.safe_load((workdir / "override.yaml").read_text())
    override["sample"]["temperature"] = 0.9
    (workdir / "override.yaml").write_text(yaml.safe_dump(override))
    planned = _planned_jobs(_snakemake(workdir, "-n"))
    assert planned.get("sample") == 1
    assert not UPSTREAM_OF_SAMPLE & set(planned)
    assert set(planned) == {"sample", "world_summary", "report", "all"}
