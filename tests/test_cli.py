"""The command line as a user meets it: one-line errors without tracebacks, a quiet end when the reader of
its output goes away, a description in every --help, --version, and the provenance a run records."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from valueguide import cli

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "valueguide.cli"]
GENERATE = ["generate", "--config", str(ROOT / "config.yaml"), "--prompts", "prompts.parquet", "--out", "out.parquet"]


def _run(args: list[str], cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, cause", [
    (["--model", "gpt2-large", "--method", "ivgg"], "--method 'ivgg' is not a key of the config's generate.methods"),
    (["--model", "gpt2-larg", "--method", "ivg"], "--model 'gpt2-larg' is not a key of the config's models"),
    (["--model", "gpt2-large", "--method", "ivg"], "missing artifact: prompts.parquet"),
])
def test_a_user_error_is_one_line_and_exit_status_2(args, cause, tmp_path):
    done = _run(GENERATE + args, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [f"error: {cause}"] or done.stderr.startswith(f"error: {cause}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_value_error_of_a_stage_is_one_line_too(tmp_path, capsys):
    """A stage's own check of its input (here: a report of no metrics) ends as a user error."""
    code = cli.main(["report", "--config", str(ROOT / "config.yaml"), "--samples", str(tmp_path / "s.parquet"),
                     "--out-dir", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_show_report_into_a_closed_pipe_ends_quietly(tmp_path):
    report = tmp_path / "results" / "report"
    report.mkdir(parents=True)
    for name in ("summary.md", "tables.md"):
        (report / name).write_text("# a line\n" * 200_000)  # more than a pipe holds
    (tmp_path / "here.yaml").write_text(f"results_dir: {tmp_path / 'results'}\n")
    done = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -1', "bash", *CLI, "show-report", "--config",
                           str(ROOT / "config.yaml"), str(tmp_path / "here.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("==> report of ") and "here.yaml" in done.stdout


def test_every_subcommand_has_a_description_and_every_argument_a_help():
    import argparse

    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) > 15
    for name, command in sub.choices.items():
        assert command.description and "".join(command.description.split()) in "".join(command.format_help().split())
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
    assert all(action.help for action in parser._actions if action.dest != "command")


def test_a_subcommands_help_prints_its_description(capsys):
    with pytest.raises(SystemExit) as ended:
        cli.main(["plan", "--help"])
    assert ended.value.code == 0
    assert "jobs per stage, tokens and forward passes per method" in capsys.readouterr().out


def test_version_names_the_package_and_the_commit():
    from valueguide import __version__

    done = _run(["--version"])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert done.returncode == 0 and done.stdout.startswith(f"valueguide {__version__} (commit {commit[:12]}")


def test_provenance_holds_commit_versions_and_config_and_no_secret(tmp_path, monkeypatch):
    from valueguide.config import load_config
    from valueguide.provenance import write_provenance

    secret, token = "sk-test-0123456789abcdef", "hf_test_token_value"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", token)
    config = load_config(ROOT / "config.yaml")
    config["results_dir"] = str(tmp_path / "results")
    argv = ["snakemake", "--cores", "2", "--config", f"note=key-{secret}"]  # a key typed on the command line
    path = write_provenance(config, ["config.yaml"], argv)
    text = path.read_text()
    assert path == tmp_path / "results" / "provenance.json"
    assert secret not in text and token not in text and "OPENAI_API_KEY" not in text
    record = json.loads(text)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert record["git"]["commit"] == head.strip() and isinstance(record["git"]["dirty"], bool)
    for package in ("python", "torch", "transformers", "trl", "snakemake", "alpaca-eval"):
        assert record["versions"][package], package
    assert record["config"]["generate"] == config["generate"] and record["config_files"] == ["config.yaml"]
    assert record["command"][-1] == "note=key-<hidden>"
    assert [p.name for p in path.parent.iterdir()] == ["provenance.json"]  # written atomically: no leftovers


def test_ctrl_c_ends_a_command_with_one_word_and_status_130(monkeypatch, capsys):
    """A job's log after Ctrl-C says "interrupted", not a traceback of wherever the job was."""
    from valueguide import plan

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "render_plan", interrupted)
    assert cli.main(["plan", "--config", str(ROOT / "config.yaml")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
