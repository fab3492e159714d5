"""What a run through SLURM (profiles/slurm) needs from the cluster, checked before any job is sent."""

from __future__ import annotations

import subprocess

SQUEUE_FLAG = "--slurm-status-command squeue"


def sacct_answers() -> bool:
    """Whether ``sacct`` can report job states here: it cannot where accounting storage is off."""
    try:
        proc = subprocess.run(["sacct", "--noheader", "--allocations", "--starttime", "now"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def status_problem(status_command: str | None) -> str | None:
    """Why the SLURM executor's job-status queries would fail, or None.

    snakemake-executor-plugin-slurm polls job states with ``sacct`` whenever the command exists. On a
    cluster without accounting every query fails; after a few tries the plugin forgets the job without
    marking it done or failed, and Snakemake waits for it forever. So a run stops here instead, saying
    which flag to pass."""
    if status_command == "sacct" and not sacct_answers():
        return (f"sacct cannot report job states on this cluster (is accounting storage off?); run with "
                f"{SQUEUE_FLAG}, which needs the cluster's MinJobAge to be at least 120 s")
    return None
