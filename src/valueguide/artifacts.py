"""Atomic artifact writes and validated reads.

Every stage writes through these helpers so that a killed job never leaves a file (or a model
folder) that a rerun would accept: content goes to a temporary sibling first and is renamed into
place only once complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


class ArtifactError(RuntimeError):
    """An input artifact is missing, truncated or of the wrong shape."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stale_siblings(path: Path) -> None:
    """Remove what a killed writer of ``path`` left behind (each artifact has one writer)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _readable(folder: Path) -> None:
    """Files a library wrote privately (safetensors writes 0600) get the permissions of a plain open()."""
    mode = 0o666 & ~_umask()
    for file in folder.rglob("*"):
        if file.is_file():
            file.chmod(mode)


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    """A private temporary sibling, given the permissions a plain open()/mkdir() would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path`` in one rename."""
    path = Path(path)
    _stale_siblings(path)
    tmp = _tmp_sibling(path, is_dir=False)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces the folder ``path``."""
    path = Path(path)
    _stale_siblings(path)
    tmp = _tmp_sibling(path, is_dir=True)
    try:
        yield tmp
        _readable(tmp)
        if path.exists():
            old = _tmp_sibling(path, is_dir=True)
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_parquet(path: str | os.PathLike, required: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a parquet artifact and check it has the columns a stage depends on."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact: {path}")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a truncated file
        raise ArtifactError(f"cannot read {path} (truncated or not parquet): {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path} lacks columns {missing}; has {list(df.columns)}")
    return df


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing artifact: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"cannot parse {path} (truncated?): {exc}") from exc
