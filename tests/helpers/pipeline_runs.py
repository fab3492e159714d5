"""Running the Snakefile on a tiny config in a folder of its own: what the pipeline tests share."""

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# pytest-timeout's limit for a test that runs the DAG (pyproject.toml sets the others'): a hung run
# fails its test, a slow one on a busy two-core machine does not (the longest took 2.5 minutes).
RUN_TIMEOUT = 1800


def command(workdir: Path, *args: str) -> list[str]:
    """Snakemake on ``workdir``'s override.yaml, two cores, as ``make run`` calls it."""
    return [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args,
            "--configfile", str(workdir / "override.yaml")]  # last: it takes every value after it


def env_of_run() -> dict:
    """The environment a run gets: this interpreter's tools first, the hub offline."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}


def snakemake(workdir: Path, *args: str, warm: bool = False) -> str:
    """Snakemake on ``workdir``; ``warm``: under ``valueguide warm-run``, its jobs forked from one warm
    process, as ``make run`` runs them."""
    env = env_of_run()
    warm_run = [str(Path(sys.executable).with_name("valueguide")), "warm-run", "--"] if warm else []
    proc = subprocess.run(warm_run + command(workdir, *args), capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned_jobs(output: str) -> dict[str, int]:
    """Jobs per rule in a dry run's job stats."""
    stats = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def write_override(workdir: Path, change: dict | None = None, setting: str | None = None) -> None:
    """The tiny config with results in ``workdir`` (over ``setting``, the config file of another setting,
    with mistral its one large model), plus ``change`` (merged like a config file)."""
    from valueguide.config import deep_merge

    override = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    if setting:
        override = deep_merge(yaml.safe_load((ROOT / setting).read_text()), override)
        override["generate"]["large_models"] = ["mistral"]
    override["results_dir"] = str(workdir / "results")
    (workdir / "override.yaml").write_text(yaml.safe_dump(deep_merge(override, change or {})))


def shared_tiny_run(tmp_path_factory) -> Path:
    """The tiny config run once per ``pytest`` invocation, for every module and worker (pytest-xdist)
    that needs a finished run to read or to compare with: the first to ask runs it, the others wait.
    Its jobs fork from a warm process (``make run``'s way); tests/test_slurm.py's run, whose jobs are
    processes of their own, must give the same artifacts.
    Its users may plan on it and rewrite its override.yaml, never change its artifacts."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    workdir, done = root / "tiny-run", root / "tiny-run.done"
    with open(root / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a worker that failed midway
            workdir.mkdir()
            write_override(workdir)
            snakemake(workdir, warm=True)
            done.touch()
    return workdir


def digests(results: Path, pattern: str) -> dict[str, str]:
    """SHA-256 of every file under ``results`` matching ``pattern``, by relative path."""
    import hashlib

    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.glob(pattern)) if p.is_file()}


def assert_same_artifacts(a: Path, b: Path) -> None:
    """Two runs' results agree: prompts, samples, every model's weights byte for byte; generations and
    scores value for value, apart from the wall time they report."""
    import pandas as pd

    for pattern in ("prompts/*.parquet", "samples/*.parquet", "**/*.safetensors", "**/pooled_vocabulary.json"):
        first = digests(a, pattern)
        assert first and first == digests(b, pattern), pattern
    for path in sorted(a.glob("generations/**/*.parquet")) + [a / "scores" / "reward_scores.parquet"]:
        left, right = (pd.read_parquet(root / path.relative_to(a)) for root in (a, b))
        timing = [c for c in left.columns if c == "wall_time"]
        pd.testing.assert_frame_equal(left.drop(columns=timing), right.drop(columns=timing))
