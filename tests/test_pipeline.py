"""The DAG on the tiny config: it runs end to end, caches, and reruns exactly what a change touches."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
UPSTREAM_OF_SAMPLE = {"world_corpus", "world_lm", "world_reward", "prompts"}


def _command(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args,
            "--configfile", str(workdir / "override.yaml")]  # last: it takes every value after it


def _env() -> dict:
    """The environment a run gets: this interpreter's tools first, the hub offline."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}


def _snakemake(workdir: Path, *args: str) -> str:
    env = _env()
    proc = subprocess.run(_command(workdir, *args), capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _planned_jobs(output: str) -> dict[str, int]:
    stats = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def _write_override(workdir: Path, change: dict | None = None, setting: str | None = None) -> None:
    """The tiny config with results in ``workdir`` (over ``setting``, a config file of another setting
    whose world is ``world_dir``), plus ``change`` (merged like a config file)."""
    from valueguide.config import deep_merge

    override = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())
    if setting:
        override = deep_merge(yaml.safe_load((ROOT / setting).read_text()), override)
        override["generate"]["large_models"] = ["mistral"]
    override["results_dir"] = str(workdir / "results")
    (workdir / "override.yaml").write_text(yaml.safe_dump(deep_merge(override, change or {})))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    _write_override(workdir)
    _snakemake(workdir)
    return workdir


@pytest.fixture(scope="module")
def instruction(workdir, tmp_path_factory) -> Path:
    """The instruction setting (config/tiny_instruction.yaml, tiny) on the sentiment setting's world."""
    other = tmp_path_factory.mktemp("instruction")
    _write_override(other, {"world": {"dir": str(workdir / "results" / "world")}},
                    setting="config/tiny_instruction.yaml")
    out = _snakemake(other)
    assert not re.search(r"rule world_(corpus|lm|reward):", out), "the shared world was rebuilt"
    return other


def test_the_dag_writes_every_artifact(workdir):
    results = workdir / "results"
    for path in ["world_summary.json", "samples/gpt2-small.parquet", "prompts/train.parquet",
                 "report/summary.md", "report/tables.md", "report/reward_by_method.png",
                 "world/models/mixtral/model.safetensors", "world/models/tulu/pooled_vocabulary.json",
                 "value/metrics.json", "implicit/metrics.json", "generations/test/gpt2-large/ivg.parquet",
                 "scores/reward_metrics.csv"]:
        assert (results / path).exists(), path
    summary = (results / "report" / "summary.md").read_text()
    assert "reward mean" in summary and "Gold reward model" in summary
    tables = (results / "report" / "tables.md").read_text()
    assert "ivg" in tables and "gpt2-large" in tables
    for stage in ["sample", "world", "prompts", "fit_value", "fit_implicit", "generate", "evaluate", "report"]:
        assert list((results / "logs" / stage).glob("*.log")), stage
        assert list((results / "benchmarks" / stage).glob("*.tsv")), stage


def test_the_instruction_setting_guides_across_vocabularies(instruction):
    """Tulu (Llama-2's vocabulary) and a gpt2 value guide mistral (Mistral's), every method, in the DAG."""
    import json

    import pandas as pd

    results = instruction / "results"
    for path in ["samples/tulu.parquet", "value/metrics.json", "implicit/pooled_vocabulary.json",
                 "alpaca_eval/metrics.csv", "report/tables.md"]:
        assert (results / path).exists(), path
    for method in ["base", "bon", "eft", "vas", "cbs_implicit", "cbs_explicit", "ivg"]:
        gens = pd.read_parquet(results / "generations" / "alpaca" / "mistral" / f"{method}.parquet")
        assert len(gens) == 6 and (gens.n_tokens > 0).all()
        candidates = json.loads(gens.candidate_tokens[0])
        token_level = {"eft": "tuned", "ivg": "tuned", "vas": "value"}.get(method)
        assert (token_level in candidates) if token_level else not candidates, method  # scored on text


def _digests(results: Path, pattern: str) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.glob(pattern)) if p.is_file()}


def _kill_when(workdir: Path, ready, what: str) -> None:
    """Start the run as ``make run`` does and SIGKILL it, jobs and all, once ``ready(results, start)`` holds."""
    env = _env()
    proc = subprocess.Popen(_command(workdir, "--rerun-incomplete"), stdout=subprocess.DEVNULL,
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
    "generation": _started("logs/generate/*.log"),
}


def test_a_run_killed_anywhere_resumes_to_the_artifacts_of_an_uninterrupted_run(workdir, tmp_path_factory):
    """SIGKILL (Snakemake and its jobs) at several points; each next run resumes by itself, as ``make
    run`` does, and the end result equals the uninterrupted run's byte for byte (prompts, samples, every
    model's weights), generations and scores apart from the wall time they report. So the same config
    run twice on one machine gives the same artifacts, however often it was cut short."""
    import pandas as pd

    other = tmp_path_factory.mktemp("killed")
    _write_override(other)
    for what, ready in KILL_POINTS.items():
        if what != next(iter(KILL_POINTS)):
            assert "removed the lock of a run that was killed" in _resume(other), what
        _kill_when(other, ready, what)
    assert "removed the lock" in _resume(other)
    _snakemake(other, "--rerun-incomplete")
    a, b = workdir / "results", other / "results"
    assert not list(b.rglob(".*.tmp-*")), "a killed job's temporary files were left behind"
    for pattern in ("prompts/*.parquet", "samples/*.parquet", "**/*.safetensors", "**/pooled_vocabulary.json"):
        first = _digests(a, pattern)
        assert first and first == _digests(b, pattern), pattern
    for path in sorted(a.glob("generations/**/*.parquet")) + [a / "scores" / "reward_scores.parquet"]:
        left, right = (pd.read_parquet(root / path.relative_to(a)) for root in (a, b))
        timing = [c for c in left.columns if c == "wall_time"]
        pd.testing.assert_frame_equal(left.drop(columns=timing), right.drop(columns=timing))


def test_a_second_run_does_nothing(workdir):
    out = _snakemake(workdir, "-n")
    assert "Nothing to be done" in out


def test_a_sampling_change_reruns_exactly_sample_and_downstream(workdir):
    _write_override(workdir, {"sample": {"temperature": 0.9}})
    planned = _planned_jobs(_snakemake(workdir, "-n"))
    assert planned.get("sample") == 1
    assert not UPSTREAM_OF_SAMPLE & set(planned)
    assert set(planned) == {"sample", "world_summary", "fit_value", "diagnose_value", "fit_implicit", "generate",
                            "evaluate_reward", "report", "all"}
    # every method of the tiny config reads a fitted value except base, whose generations stay cached
    assert planned["generate"] == 6


def test_a_decoding_change_reruns_generation_but_no_fit(workdir):
    _write_override(workdir, {"generate": {"methods": {"ivg": {"chunk": {"W": 2}}}}})
    planned = _planned_jobs(_snakemake(workdir, "-n"))
    assert planned.get("generate") == 1
    assert not {"sample", "fit_value", "fit_implicit", *UPSTREAM_OF_SAMPLE} & set(planned)


@pytest.mark.parametrize("change, rerun", [
    ({"fit_value": {"eval": {"cuts": 3, "rollouts": 3}}}, {"diagnose_value", "report", "all"}),  # diagnostics
    ({"threads": 2}, set()),  # a runtime knob: every rule passes its own --threads
])
def test_a_diagnostics_or_runtime_knob_reruns_no_fit(workdir, change, rerun):
    _write_override(workdir, change)
    out = _snakemake(workdir, "-n")
    assert (set(_planned_jobs(out)) if "Job stats:" in out else set()) == rerun, out[-2000:]


def test_bad_input_stops_the_run_before_any_job_and_loses_nothing(workdir):
    """On a finished run: a missing model folder and a judge without its key stop Snakemake itself with
    exit 2, one line each and no traceback, and every artifact stays as it was."""
    before = _digests(workdir / "results", "**/*")
    _write_override(workdir, {"models": {"gpt2-large": {"path": "./no/such/model"}},
                              "evaluate": {"alpaca": {"judge": "gpt4_turbo"}}})
    env = _env()
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(_command(workdir), capture_output=True, text=True, env=env, timeout=300)
    _write_override(workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    problems = proc.stderr.split("error: the run cannot start:\n", 1)[1].splitlines()
    assert [p.split(":")[0].strip() for p in problems] == ["models.gpt2-large.path", "evaluate.alpaca.judge"]
    assert _digests(workdir / "results", "**/*") == before


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
    _write_override(tmp_path)
    override = yaml.safe_load((tmp_path / "override.yaml").read_text())
    override["results_dir"] = str(hostile)
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    target = str(hostile / "prompts" / "test.parquet")
    env = _env()
    command = [str(checkout / "Snakefile") if arg == str(ROOT / "Snakefile") else arg
               for arg in _command(tmp_path, target)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
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
