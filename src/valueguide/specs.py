"""How a model is named, without loading anything: the Snakefile reads these names to plan the DAG,
so this module imports neither torch nor transformers (each Snakemake start, every SLURM job's two
among them, would pay seconds for it).

A *spec* is ``world:NAME`` (a model of the locally built tiny world), a local folder, or a Hugging
Face hub id."""

from __future__ import annotations

from pathlib import Path

WORLD_PREFIX = "world:"


def world_name(spec: str) -> str | None:
    """The tiny-world model a spec names (``world:NAME`` -> ``NAME``), or None for any other spec."""
    return spec[len(WORLD_PREFIX):] if spec.startswith(WORLD_PREFIX) else None


class ModelNotFoundError(FileNotFoundError):
    """The named model is neither a local folder, a tiny-world model nor a cached hub snapshot."""


def is_local_path(spec: str) -> bool:
    """Whether a spec names a folder rather than a hub id (``gpt2``, ``owner/name``).

    A hub id has at most one slash; ``models/mine`` is a folder when ``models`` is one here, so a
    mistyped relative path is reported as a missing folder, not as a model missing from the hub."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).expanduser().exists():
        return True
    return "/" in spec and Path(spec.split("/", 1)[0]).is_dir()
