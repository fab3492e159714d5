"""Jobs forked from the warm process (valueguide/warm_server.py) behave as processes of their own: their
arguments, folder, environment, streams and exit status are the job's; a stopped job's child stops;
with no server a job runs by itself; and a real job writes what a fresh process writes."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.pipeline_runs import ROOT, RUN_TIMEOUT, env_of_run, shared_tiny_run

# A server whose jobs are a stand-in for the CLI: print what they were given, or sleep.
SERVER = textwrap.dedent("""
    import os, sys, time
    from valueguide.warm_server import serve_while

    def job(argv):
        if argv[0] == "sleep":
            Path = __import__("pathlib").Path
            Path(argv[1] + ".tmp").write_text(str(os.getpid()))
            os.replace(argv[1] + ".tmp", argv[1])
            time.sleep(120)
            return 0
        if argv[0] == "bar":  # a progress bar's redraws, then a while of work
            for i in range(1, 4):
                print(f"\\rgenerate x/ivg:  {i}/3", end="", file=sys.stderr, flush=True)
                time.sleep(0.6)
                print("\\n  warnings.warn(", file=sys.stderr, flush=True)  # a warning between redraws
            return 0
        print("argv", argv, "cwd", os.getcwd(), "value", os.environ.get("JOB_VALUE"))
        print("to stderr", file=sys.stderr)
        return int(argv[0])

    sys.exit(serve_while(sys.argv[1:], run_job=job, modules=(), progress_s=float(os.environ.get("PROGRESS_S", 60))))
""")
JOB = f"{sys.executable} -m valueguide.warm"


def _serve(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SERVER, "bash", "-c", script], cwd=tmp_path, env=env_of_run(),
                          capture_output=True, text=True, timeout=60)


def test_a_running_jobs_progress_reaches_the_console_a_line_at_a_time(tmp_path):
    """The job's bar goes to its log; the console gets its newest line, once per change, not the redraws."""
    env = {**env_of_run(), "PROGRESS_S": "0.25"}
    done = subprocess.run([sys.executable, "-c", SERVER, "bash", "-c", f"{JOB} bar 2> log"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stderr.splitlines() if "generate x/ivg" in line]
    assert shown and shown == sorted(set(shown)) and all(line.startswith("  ... generate x/ivg:  ") for line in shown)
    assert "  ... warnings.warn(" not in done.stderr  # a line that is not a bar's is not shown
    assert (tmp_path / "log").read_bytes().count(b"\r") == 3  # the log keeps every redraw


def test_an_interrupt_says_how_to_resume(tmp_path):
    """Ctrl-C (SIGINT to the foreground process group): the command stops, and the server says how to resume."""
    import signal

    server = subprocess.Popen([sys.executable, "-c", SERVER, "bash", "-c", f"{JOB} sleep one"], cwd=tmp_path,
                              env=env_of_run(), stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "one").exists():
        assert time.monotonic() < deadline and server.poll() is None, "the job never started"
        time.sleep(0.05)
    os.killpg(server.pid, signal.SIGINT)
    _, err = server.communicate(timeout=30)
    assert server.returncode != 0 and "Run the same command again (make run) to resume" in err, err
    assert err.count("interrupted:") == 1


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_job_gets_its_arguments_folder_environment_streams_and_exit_status(tmp_path):
    (tmp_path / "sub").mkdir()
    done = _serve(tmp_path, f"cd sub && JOB_VALUE=x {JOB} 3 a > out 2> err; echo $? > code; exit 5")
    assert done.returncode == 5, done.stderr
    sub = tmp_path / "sub"
    assert (sub / "code").read_text() == "3\n"
    assert (sub / "out").read_text() == f"argv ['3', 'a'] cwd {sub} value x\n"
    assert (sub / "err").read_text() == "to stderr\n"


def test_a_stopped_job_and_the_jobs_left_when_the_command_ends_are_stopped(tmp_path):
    wait_for = "while [ ! -s {0} ]; do sleep 0.05; done"
    script = (f"{JOB} sleep one & job=$!; {wait_for.format('one')}; kill $job; wait $job; echo $? > code; "
              f"sleep 0.5; {JOB} sleep two & {wait_for.format('two')}")
    started = time.monotonic()
    done = _serve(tmp_path, script)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30  # neither job slept its two minutes
    assert (tmp_path / "code").read_text() == "143\n"  # the job's command died of SIGTERM
    for name in ("one", "two"):
        assert _gone(int((tmp_path / name).read_text())), name


def test_a_sigterm_to_the_server_ends_its_command_and_its_jobs(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", SERVER, "bash", "-c", f"{JOB} sleep one; sleep 120"],
                              cwd=tmp_path, env=env_of_run(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "one"
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline and server.poll() is None, "the job never started"
        time.sleep(0.05)
    server.terminate()
    assert server.wait(timeout=30) != 0  # the command (bash) ended by SIGTERM, not its two minutes
    assert _gone(int(pid_file.read_text()))


def test_without_a_server_the_job_runs_in_its_own_process(tmp_path):
    env = {**env_of_run(), "VALUEGUIDE_WARM": str(tmp_path / "no.sock")}
    done = subprocess.run([sys.executable, "-m", "valueguide.warm", "validate", "--config", "config.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "config OK" in done.stdout, done.stderr


def test_a_module_the_server_cannot_import_is_left_to_the_jobs(caplog):
    import gc
    import socket

    from valueguide import warm_server as warm

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        jobs = warm._Jobs(listener, run_job=None, modules=("no_such_module_here", "json"), interrupt=None)
        jobs._import_next()
        jobs._import_next()  # the last: the server then freezes what it holds; not this test process's
        gc.unfreeze()
        jobs.selector.close()
    assert not jobs.to_import and "could not import no_such_module_here" in caplog.text


def test_every_stage_module_is_preloaded():
    from valueguide import warm_server as warm

    stages = {line.split("from .", 1)[1].split(" import")[0]
              for line in (ROOT / "src" / "valueguide" / "cli.py").read_text().splitlines()
              if line.startswith("    from .") and " import run_" in line}
    assert stages and {f"valueguide.{s}" for s in stages} <= set(warm.PRELOAD)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return shared_tiny_run(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_a_forked_job_writes_what_a_fresh_process_writes(tiny_run, tmp_path):
    """IVG's generate job of the shared run (forked from the warm process), again as a process of its own."""
    results = tiny_run / "results"
    splits = [p for p in (results / "prompts" / "test.parquet", results / "prompts" / "alpaca.parquet") if p.exists()]
    fresh = [tmp_path / f"{p.stem}.parquet" for p in splits]
    (ivg_slice,) = (results / "configs" / "generate-gpt2-large-ivg").glob("*.json")  # the one of this config
    cmd = [sys.executable, "-m", "valueguide.cli", "generate", "--slice", str(ivg_slice),
           "--model", "gpt2-large", "--method", "ivg", "--prompts", *map(str, splits), "--value", str(results / "value"),
           "--tuned", str(results / "implicit"), "--out", *map(str, fresh), "--world", str(results / "world"),
           "--threads", "1"]
    done = subprocess.run(cmd, cwd=tiny_run, env=env_of_run(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for split, path in zip(splits, fresh):
        warm = pd.read_parquet(results / "generations" / split.stem / "gpt2-large" / "ivg.parquet")
        pd.testing.assert_frame_equal(warm.drop(columns="wall_time"), pd.read_parquet(path).drop(columns="wall_time"))


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_jobs_on_this_machine_ask_the_server_only_under_warm_run(tiny_run):
    from tests.helpers.pipeline_runs import command

    plain = {k: v for k, v in env_of_run().items() if k != "VALUEGUIDE_WARM"}
    for env, entry in (({"VALUEGUIDE_WARM": "/x.sock"}, "-m valueguide.warm "), ({}, "-m valueguide.cli ")):
        done = subprocess.run(command(tiny_run, "-n", "-p", "--forcerun", "report"), env={**plain, **env},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and entry in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT)
def test_a_run_records_its_provenance_and_a_dry_run_then_plans_and_writes_nothing(tiny_run):
    """results/provenance.json, written as the run started its jobs: no job's input, so the finished run
    plans nothing, and a dry run leaves it as it was."""
    import json

    from tests.helpers.pipeline_runs import command

    path = tiny_run / "results" / "provenance.json"
    record, before = json.loads(path.read_text()), path.stat().st_mtime_ns
    assert record["config_files"] == ["config.yaml", str(tiny_run / "override.yaml")]
    assert record["config"]["results_dir"] == str(tiny_run / "results") and record["versions"]["snakemake"]
    assert record["git"]["commit"] and "--configfile" in record["command"]
    done = subprocess.run(command(tiny_run, "-n"), env=env_of_run(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr, done.stderr[-2000:]
    assert path.stat().st_mtime_ns == before
