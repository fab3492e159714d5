"""Atomic writes: all or nothing, nothing left behind by a killed writer, files readable like any other."""

import os
import stat

import pytest

from valueguide.artifacts import atomic_dir, atomic_path, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_write_leaves_the_old_artifact_and_no_temporary(tmp_path):
    write_json({"a": 1}, tmp_path / "x.json")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "x.json").read_text().startswith("{") and sorted(os.listdir(tmp_path)) == ["x.json"]


def test_what_a_killed_writer_left_is_removed_by_the_next_write(tmp_path):
    # A SIGKILL runs no cleanup: the temporary siblings stay until the artifact is written again.
    (tmp_path / ".model.tmp-abc").mkdir()
    (tmp_path / ".model.tmp-abc" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".m.json.tmp-xyz").write_text("half")
    (tmp_path / ".other.tmp-keep").mkdir()  # another artifact's: not ours to touch
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    write_json({}, tmp_path / "m.json")
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-keep", "m.json", "model"]


def test_a_folders_files_get_the_permissions_of_a_plain_open(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        private = tmp / "model.safetensors"
        private.write_bytes(b"w")
        private.chmod(0o600)  # as safetensors writes it
    umask = os.umask(0)
    os.umask(umask)
    assert _mode(tmp_path / "model" / "model.safetensors") == 0o666 & ~umask
