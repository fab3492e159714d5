"""The DAG on the tiny config: it runs end to end, caches, and reruns exactly what a change touches."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.pipeline_runs import (ROOT, RUN_TIMEOUT, assert_same_artifacts, command, digests, env_of_run,
                                         planned_jobs, shared_tiny_run, snakemake, write_override)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT)]
UPSTREAM_OF_SAMPLE = {"world_corpus", "world_lm", "world_reward", "prompts"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The tiny run that tests/test_slurm.py also compares with (these tests only plan on it)."""
    return shared_tiny_run(tmp_path_factory)


def test_the_dag_writes_every_artifact(workdir):
    results = workdir / "results"
    for path in ["world_summary.json", "samples/gpt2-small.parquet", "prompts/train.parquet",
                 "report/summary.md", "report/tables.md", "report/reward_by_method.png",
                 "world/models/mixtral/model.safetensors", "world/models/tulu/pooled_vocabulary.json",
                 "value/metrics.json", "implicit/metrics.json", "generations/test/gpt2-large/ivg.parquet",
                 "finetuned/dpo/gpt2-large/model.safetensors", "finetuned/rl/gpt2-large/metrics.json",
                 "generations/test/gpt2-large/rl.parquet", "scores/reward_metrics.csv"]:
        assert (results / path).exists(), path
    summary = (results / "report" / "summary.md").read_text()
    assert "reward mean" in summary and "Gold reward model" in summary
    tables = (results / "report" / "tables.md").read_text()
    assert "ivg" in tables and "gpt2-large" in tables
    for stage in ["sample", "world", "prompts", "fit_value", "fit_implicit", "finetune", "generate", "evaluate",
                  "report"]:
        assert list((results / "logs" / stage).glob("*.log")), stage
        assert list((results / "benchmarks" / stage).glob("*.tsv")), stage


def _kill_when(workdir: Path, ready, what: str) -> None:
    """Start the run as ``make run`` does and SIGKILL it, jobs and all, once ``ready(results, start)`` holds."""
    env = env_of_run()
    proc = subprocess.Popen(command(workdir, "--rerun-incomplete"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        start = time.time()
        deadline = time.monotonic() + 600
        while not ready(workdir / "results", start):
            assert proc.poll() is None, f"the run ended before {what}"
            assert time.monotonic() < deadline, f"never reached {what}"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def _resume(workdir: Path) -> str:
    """What ``make run`` does first: clear what a killed run left."""
    proc = subprocess.run([sys.executable, "-m", "valueguide.cli", "resume", "--directory", str(workdir),
                           "--config", str(ROOT / "config.yaml"), str(workdir / "override.yaml")],
                          capture_output=True, text=True, check=True)
    return proc.stdout


def _started(log: str):
    """A job of this run has written to its log."""
    return lambda results, since: any(p.stat().st_size > 0 and p.stat().st_mtime > since for p in results.glob(log))


KILL_POINTS = {  # what: when the run is killed
    "the world build": lambda results, since: (results / "world" / "corpus.parquet").exists(),
    "the value fit": _started("logs/fit_value/*.log"),
    "the fine-tuning": _started("logs/finetune/*.log"),
    "generation": _started("logs/generate/*.log"),
}


def test_a_run_killed_anywhere_resumes_to_the_artifacts_of_an_uninterrupted_run(workdir, tmp_path_factory):
    """SIGKILL (Snakemake and its jobs) at several points; each next run resumes by itself, as ``make
    run`` does, and the end result equals the uninterrupted run's byte for byte (prompts, samples, every
    model's weights), generations and scores apart from the wall time they report. So the same config
    run twice on one machine gives the same artifacts, however often it was cut short."""
    other = tmp_path_factory.mktemp("killed")
    write_override(other)
    for what, ready in KILL_POINTS.items():
        if what != next(iter(KILL_POINTS)):
            assert "removed the lock of a run that was killed" in _resume(other), what
        _kill_when(other, ready, what)
    assert "removed the lock" in _resume(other)
    snakemake(other, "--rerun-incomplete")
    assert not list((other / "results").rglob(".*.tmp-*")), "a killed job's temporary files were left behind"
    assert_same_artifacts(workdir / "results", other / "results")


def test_a_second_run_does_nothing(workdir):
    out = snakemake(workdir, "-n")
    assert "Nothing to be done" in out


def test_a_sampling_change_reruns_exactly_sample_and_downstream(workdir):
    write_override(workdir, {"sample": {"temperature": 0.9}})
    planned = planned_jobs(snakemake(workdir, "-n"))
    assert planned.get("sample") == 1
    assert not UPSTREAM_OF_SAMPLE & set(planned)
    assert set(planned) == {"config_slice", "sample", "world_summary", "fit_value", "diagnose_value", "fit_implicit",
                            "fit_classifier", "finetune", "generate", "evaluate_reward", "report", "all"}
    assert planned["config_slice"] == 1 + 2  # sample's slice, fit_value's and diagnose_value's (they copy sample)
    # DPO's baseline trains on the samples; RL's on prompts, online: it stays cached
    assert planned["finetune"] == 1
    # every method of the tiny config reads a fitted value or the samples (bon, eft, vas, cbs_implicit,
    # cbs_explicit, ivg, fudge, dpo) except base and rl, whose generations stay cached
    assert planned["generate"] == 8


def test_a_decoding_change_reruns_generation_but_no_fit(workdir):
    write_override(workdir, {"generate": {"methods": {"ivg": {"chunk": {"W": 2}}}}})
    planned = planned_jobs(snakemake(workdir, "-n"))
    assert planned.get("generate") == 1
    assert not {"sample", "fit_value", "fit_implicit", *UPSTREAM_OF_SAMPLE} & set(planned)


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under ``folder``: bytes and modification time."""
    return {str(p): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_dry_run_of_a_change_writes_nothing_and_the_plan_after_it_is_empty(workdir):
    """A dry run once rewrote the config slices while the DAG was built: a job starting meanwhile in a run
    already going read the dry run's parameters, and the slice written back later had a new timestamp."""
    before = _files(workdir / "results")
    write_override(workdir, {"generate": {"methods": {"ivg": {"chunk": {"W": 2}}}}})
    assert planned_jobs(snakemake(workdir, "-n"))["generate"] == 1
    assert _files(workdir / "results") == before
    write_override(workdir)
    assert "Nothing to be done" in snakemake(workdir, "-n")


def test_a_dry_run_of_a_fresh_run_writes_nothing(tmp_path):
    write_override(tmp_path)
    planned = planned_jobs(snakemake(tmp_path, "-n"))
    assert not (tmp_path / "results").exists()
    assert planned["config_slice"] > 0 and planned["world_corpus"] == 1


@pytest.mark.parametrize("change, rerun", [
    ({"fit_value": {"eval": {"cuts": 3, "rollouts": 3}}}, {"config_slice", "diagnose_value", "report", "all"}),  # diagnostics
    ({"threads": 2}, set()),  # a runtime knob: every rule passes its own --threads
])
def test_a_diagnostics_or_runtime_knob_reruns_no_fit(workdir, change, rerun):
    write_override(workdir, change)
    out = snakemake(workdir, "-n")
    assert (set(planned_jobs(out)) if "Job stats:" in out else set()) == rerun, out[-2000:]


def test_bad_input_stops_the_run_before_any_job_and_loses_nothing(workdir):
    """On a finished run: a missing model folder and a judge without its key stop Snakemake itself with
    exit 2, one line each and no traceback, and every artifact stays as it was."""
    before = digests(workdir / "results", "**/*")
    write_override(workdir, {"models": {"gpt2-large": {"path": "./no/such/model"}},
                              "evaluate": {"alpaca": {"judge": "gpt4_turbo"}}})
    env = env_of_run()
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(command(workdir), capture_output=True, text=True, env=env, timeout=300)
    write_override(workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    problems = proc.stderr.split("error: the run cannot start:\n", 1)[1].splitlines()
    assert [p.split(":")[0].strip() for p in problems] == ["models.gpt2-large.path", "evaluate.alpaca.judge"]
    assert digests(workdir / "results", "**/*") == before


def test_config_values_never_run_in_the_shell(tmp_path):
    """A results_dir with a space and a command substitution is one path to every job, never a command;
    so is a checkout whose path holds them (the workflow files copied there)."""
    import shutil

    checkout = tmp_path / "check out $(touch PWNED)"
    checkout.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, checkout / name)
    for folder in ("workflow", "envs"):
        shutil.copytree(ROOT / folder, checkout / folder, symlinks=False)
    hostile = tmp_path / "r $(touch PWNED) x"
    write_override(tmp_path)
    override = yaml.safe_load((tmp_path / "override.yaml").read_text())
    override["results_dir"] = str(hostile)
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    target = str(hostile / "prompts" / "test.parquet")
    env = env_of_run()
    copied = [str(checkout / "Snakefile") if arg == str(ROOT / "Snakefile") else arg
              for arg in command(tmp_path, target)]
    proc = subprocess.run(copied, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (hostile / "prompts" / "test.parquet").exists()
    assert (hostile / "logs" / "prompts" / "test.log").exists()
    assert not list(tmp_path.rglob("PWNED")) and not (ROOT / "PWNED").exists()


def test_a_model_key_that_is_not_a_plain_name_is_refused(tmp_path):
    from valueguide.config import ConfigError, validate_config

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["models"]["big; rm -rf ~"] = {"path": "gpt2", "template": "{prompt}"}
    with pytest.raises(ConfigError, match="models"):
        validate_config(config)
