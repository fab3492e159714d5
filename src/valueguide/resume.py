"""Resume after a kill without ceremony: clear what a dead run left, never what a live one holds.

A Snakemake process killed with SIGKILL leaves its lock in ``.snakemake/locks`` (the next run stops
with a LockException) and its jobs' temporary siblings (``.NAME.tmp-*``, see ``artifacts``). Both
are safe to remove once no Snakemake process works in that folder; ``make run`` calls
``valueguide resume`` first and passes ``--rerun-incomplete``, so jobs cut short are redone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _argument_folder(argv: list[str]) -> str | None:
    for flag in ("--directory", "-d"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return None


def live_snakemake_pids(folder: str | os.PathLike) -> list[int]:
    """Snakemake processes (other than this one) whose working folder is ``folder``."""
    folder = Path(folder).resolve()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if not any(Path(a).name == "snakemake" or a == "snakemake" for a in argv[:3]):
                continue
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # the process ended, or is not ours to read
            continue
        where = _argument_folder(argv)
        if (cwd / where if where else cwd).resolve() == folder:
            pids.append(int(proc.name))
    return pids


def clear_stale_state(folder: str | os.PathLike, results_dirs: list[str]) -> list[str]:
    """Remove a dead run's lock and temporary artifacts; say what was removed. Nothing while a run lives."""
    folder = Path(folder)
    if live_snakemake_pids(folder):
        return []
    done = []
    locks = list((folder / ".snakemake" / "locks").glob("*.lock"))
    for lock in locks:
        lock.unlink(missing_ok=True)
    if locks:
        done.append(f"removed the lock of a run that was killed ({len(locks)} file(s) in .snakemake/locks)")
    for results in results_dirs:
        stale = sorted((folder / results).rglob(".*.tmp-*")) if (folder / results).is_dir() else []
        for path in stale:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if stale:
            done.append(f"removed {len(stale)} temporary file(s) a killed job left in {results}")
    return done
