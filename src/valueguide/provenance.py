"""What made a run's results: the code's commit, the package versions, the merged config and the command.

A run of the Snakefile writes ``<results_dir>/provenance.json`` when it starts jobs (never in a dry run,
and no job reads it, so it cannot make a finished run plan anything). Nothing from the environment is
recorded, and any text holding the value of a secret-looking environment variable (an API key, a token)
is written with that value replaced, so a key passed on the command line does not land in the results.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from .artifacts import write_json

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when the package runs from one
PACKAGES = ("valueguide", "torch", "transformers", "trl", "peft", "accelerate", "snakemake", "alpaca-eval",
            "huggingface-hub", "tokenizers", "datasets", "pandas", "numpy", "scipy")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
HIDDEN = "<hidden>"


def git_state(root: Path = CHECKOUT) -> dict | None:
    """The checkout's commit and whether tracked files differ from it; None outside a git checkout."""
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def version_string() -> str:
    """``valueguide X (commit C[, with uncommitted changes])``: what ``valueguide --version`` prints."""
    from . import __version__

    state = git_state()
    if state is None:
        return f"valueguide {__version__}"
    changed = ", with uncommitted changes" if state["dirty"] else ""
    return f"valueguide {__version__} (commit {state['commit'][:12]}{changed})"


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _secrets() -> list[str]:
    """Values of the environment variables whose names look like secrets (longest first)."""
    values = {value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= 4}
    return sorted(values, key=len, reverse=True)


def _hide(value, secrets: list[str]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, HIDDEN)
        return value
    if isinstance(value, dict):
        return {_hide(k, secrets): _hide(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hide(v, secrets) for v in value]
    return value


def record(config: dict, config_files: list[str], argv: list[str]) -> dict:
    """The provenance of a run: code, versions, config files, merged config and command line."""
    return _hide({"git": git_state(), "versions": package_versions(), "config_files": [str(f) for f in config_files],
                  "command": list(argv), "config": config}, _secrets())


def setting_names(basedir: str, files: list[str]) -> list[str]:
    """The config files of a run in merge order, each once, relative to the workflow's folder where
    inside it: the name of the run's setting."""
    names = []
    for path in files:
        full = os.path.abspath(path)
        name = os.path.relpath(full, basedir) if full.startswith(os.path.join(os.path.abspath(basedir), "")) else full
        if name not in names:
            names.append(name)
    return names


def write_provenance(config: dict, config_files: list[str], argv: list[str]) -> Path:
    """Write (atomically) ``<results_dir>/provenance.json`` for a run that starts; its path."""
    path = Path(config["results_dir"]) / "provenance.json"
    write_json(record(config, config_files, argv), path)
    return path
