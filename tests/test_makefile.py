"""The Makefile's settings: what `make run`, `make dry-run` and the test targets hand to their tools."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def _calls(tmp_path: Path, target: str, config: str | None) -> list[list[str]]:
    """The commands ``make TARGET [CONFIG=...]`` runs, with the virtual environment's tools replaced by recorders."""
    venv, log = tmp_path / "venv", tmp_path / "calls.jsonl"
    (venv / "bin").mkdir(parents=True)
    for tool in ("valueguide", "snakemake", "pytest", "python"):
        (venv / "bin" / tool).write_text(RECORDER.format(python=sys.executable, log=str(log)))
        (venv / "bin" / tool).chmod(0o755)
    args = ["make", "-s", target, f"VENV={venv}", "STAMP="] + ([f"CONFIG={config}"] if config is not None else [])
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, timeout=60)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_config_with_two_files_runs_one_setting_merged_in_order(tmp_path):
    """`make run CONFIG="config/imdb.yaml config/imdb_refit.yaml"` once ran each file as a setting of its own."""
    files = ["config/imdb.yaml", "config/imdb_refit.yaml"]
    resume, run, report = _calls(tmp_path, "run", " ".join(files))
    assert resume == ["valueguide", "--log-level", "WARNING", "resume", "--config", *files]
    assert run[run.index("--configfile"):] == ["--configfile", *files]
    assert str(tmp_path / "venv" / "bin" / "snakemake") in run and "warm-run" in run
    assert report == ["valueguide", "--log-level", "WARNING", "show-report", "--config", *files]


@pytest.mark.parametrize("target", ["run", "dry-run"])
def test_without_config_the_two_tiny_settings_run_one_after_the_other(tmp_path, target):
    runs = [call[call.index("--configfile") + 1:] for call in _calls(tmp_path, target, None) if "--configfile" in call]
    assert [[arg for arg in args if arg.endswith(".yaml")] for args in runs] == [
        ["config.yaml"], ["config/tiny_instruction.yaml"]]


def test_dry_run_merges_the_files_of_config_too(tmp_path):
    (run,) = _calls(tmp_path, "dry-run", "a.yaml b.yaml")
    assert run[:3] == ["snakemake", "--cores", "2"] and run[-4:] == ["--configfile", "a.yaml", "b.yaml", "-n"]
    # the jobs' memory is bounded (80 % of the machine's): big best-of-N generate jobs run one at a time
    assert run[3] == "--resources" and re.fullmatch(r"mem_mb=\d+", run[4]) and len(run) == 9


def test_test_fast_leaves_the_slow_tests_out_and_test_runs_them_all(tmp_path):
    (fast,) = _calls(tmp_path / "fast", "test-fast", None)
    assert fast[0] == "pytest" and fast[fast.index("-m") + 1] == "not slow"
    every, gpu_check = _calls(tmp_path / "all", "test", None)
    assert every[0] == "pytest" and "-m" not in every and gpu_check[:2] == ["python", "bench/gpu_check.py"]
    assert every == [arg for arg in fast if arg not in ("-m", "not slow")]  # the same workers and distribution


def test_make_frontiers_runs_config_yaml_and_the_sweeps_as_one_setting_and_prints_its_report(tmp_path):
    files = ["config.yaml", "config/frontiers.yaml"]
    resume, run, report = _calls(tmp_path, "frontiers", None)
    assert resume[-3:] == ["--config", *files] and run[run.index("--configfile"):] == ["--configfile", *files]
    assert "warm-run" in run and "--rerun-incomplete" in run
    assert report == ["valueguide", "--log-level", "WARNING", "show-report", "--config", *files]
