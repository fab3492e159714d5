"""The cluster path run for real: a one-node SLURM cluster (scripts/local_slurm.sh, as root) runs the
tiny world through profiles/slurm as written, with the account the only thing set; a job cancelled with
scancel midway is redone by the next invocation; the artifacts equal a local run's; and a cluster whose
job states cannot be read stops the run at once, naming the flag to pass.

Run in CI (CI=true) as part of ``make test``, and alone by ``make test-slurm`` (VALUEGUIDE_TEST_SLURM=1);
skipped elsewhere, since it installs and starts daemons. The run through SLURM took 422 s beside the rest
of ``make test`` on 2 cores (two Snakemake starts per job, the plugin's status polls); the local run it is
compared with is tests/test_pipeline.py's (``shared_tiny_run``)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.pipeline_runs import (ROOT, SNAKEMAKE, assert_same_artifacts, env_of_run, planned_jobs,
                                         shared_tiny_run, snakemake, write_override)

# An hour: past the fixtures' own deadlines (the cluster's start 15 minutes, the cancelled run 20, the
# run after it 20), which name what hung.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
ACCOUNT = "valueguide"  # the script's
POLL = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]


def _slurm_env() -> dict:
    return {**env_of_run(), "SBATCH_ACCOUNT": ACCOUNT}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not (os.environ.get("CI") == "true" or os.environ.get("VALUEGUIDE_TEST_SLURM")):
        pytest.skip("the SLURM cluster test installs and starts SLURM's daemons (as root): it runs in CI "
                    "(CI=true) or with VALUEGUIDE_TEST_SLURM=1 (`make test-slurm`)")
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (its daemons run as root)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("SLURM is not installed and apt-get is not there to install it")
    where = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(SCRIPT), "up", str(where)], capture_output=True, text=True, timeout=900)
    if proc.returncode:
        subprocess.run(["bash", str(SCRIPT), "down", str(where)], capture_output=True, timeout=300)
        pytest.skip(f"SLURM cannot start here: {proc.stderr.strip()[-500:]}")
    yield where
    subprocess.run(["bash", str(SCRIPT), "down", str(where)], capture_output=True, timeout=300)


# Start a command with Ctrl-C's default action: a test run started in the background of a shell without job
# control inherits SIGINT ignored, and so would the Snakemake that the test stops with it.
INTERRUPTIBLE = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "os.execv(sys.argv[1], sys.argv[1:])"]


def _through_slurm(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake through profiles/slurm, its output to ``workdir/slurm-run-N.log`` (not a pipe that
    nobody reads while the run goes on)."""
    command = [*INTERRUPTIBLE, SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "--profile", str(ROOT / "profiles" / "slurm"), *POLL, *args,
               "--configfile", str(workdir / "override.yaml")]
    log = workdir / f"slurm-run-{len(list(workdir.glob('slurm-run-*.log')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_slurm_env(), start_new_session=True)
    proc.log = log
    return proc


def _running(comment_prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--states", "RUNNING", "--format", "%i %k"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(comment_prefix)]


def _cancel_when_running(proc: subprocess.Popen, comment_prefix: str, deadline: float) -> str:
    """``scancel`` the first job whose comment starts with ``comment_prefix`` once it runs."""
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the job to cancel started"
        jobs = _running(comment_prefix)
        if jobs:
            time.sleep(3)  # mid-job: past Snakemake's start-up inside it
            subprocess.run(["scancel", jobs[0]], check=True)
            return jobs[0]
        time.sleep(1)
    raise AssertionError(f"no job {comment_prefix}* ran in time")


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise
    return proc.returncode, proc.log.read_text()


def _state(job: str) -> str:
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job, "--format", "State"],
                         capture_output=True, text=True).stdout
    return out.strip()


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny world through the profile; its value fit cancelled with scancel while it runs, and the
    run then stopped as a user stops it (SIGINT, Ctrl-C). The next invocation, the same command, finishes.

    The plugin (2.8.0) reads sacct's state of a cancelled job, "CANCELLED by <uid>", as not failed and
    waits for it for ever: a run whose job was cancelled must be stopped and started again."""
    workdir = tmp_path_factory.mktemp("through_slurm")
    write_override(workdir)
    expected = planned_jobs(snakemake(workdir, "-n"))
    started = time.monotonic()
    proc = _through_slurm(workdir)
    cancelled = _cancel_when_running(proc, "rule_fit_value", started + 900)
    while not _state(cancelled).startswith("CANCELLED"):
        assert time.monotonic() < started + 900, f"job {cancelled} was never cancelled"
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    _finish(proc, 300)
    code, out = _finish(_through_slurm(workdir), 1200)
    assert code == 0, out[-3000:]
    return workdir, expected, cancelled, time.monotonic() - started


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """A local ``--cores 2`` run of the same config: tests/test_pipeline.py's, run once for both."""
    return shared_tiny_run(tmp_path_factory)


def _sacct(*fields: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--starttime", "now-1days",
                          "--format", ",".join(fields)], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_every_job_of_the_tiny_world_runs_as_a_slurm_job(slurm_run):
    workdir, expected, cancelled, seconds = slurm_run
    print(f"through SLURM in {seconds:.0f} s")
    rows = _sacct("JobID", "State", "Comment", "Account", "Partition")
    done = [r for r in rows if r[1] == "COMPLETED" and r[2].startswith("rule_")]
    per_rule: dict[str, int] = {}
    for _, _, comment, account, _ in done:
        assert account == ACCOUNT
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", comment).group(1)
        per_rule[rule] = per_rule.get(rule, 0) + 1
    # every job the plan holds, each at least once (a job done just before the stop may run again), but the
    # local ones: `all`, and the config slices, which the submitting machine writes (a printf is no SLURM job)
    want = {rule: n for rule, n in expected.items() if rule not in ("all", "config_slice")}
    assert per_rule.keys() == want.keys() and all(per_rule[r] >= n for r, n in want.items()), (per_rule, want)
    assert any(r[0] == cancelled and r[1].startswith("CANCELLED") for r in rows)
    gpu_rules = {r[2].split("_wildcards_")[0] for r in done if r[4] == "gpu"}
    assert {"rule_sample", "rule_fit_value", "rule_generate"} <= gpu_rules  # the profile's GPU table, as written


def test_the_artifacts_equal_a_local_runs(slurm_run, local_run):
    assert_same_artifacts(local_run / "results", slurm_run[0] / "results")


def test_without_job_accounting_the_run_stops_at_once_naming_the_flag(cluster, slurm_run, tmp_path):
    """slurmdbd stopped: sacct cannot answer, and the run stops before sending any job (it used to hang)."""
    pid = int((cluster / "pids" / "slurmdbd").read_text())
    os.kill(pid, 15)
    for _ in range(80):
        if subprocess.run(["sacct", "--noheader", "--allocations", "--starttime", "now"],
                          capture_output=True).returncode:
            break
        time.sleep(0.25)
    write_override(tmp_path)
    started = time.monotonic()
    code, out = _finish(_through_slurm(tmp_path), 300)
    assert code != 0 and "--slurm-status-command squeue" in out, out[-3000:]
    assert time.monotonic() - started < 120 and not (tmp_path / "results" / "prompts").exists()
