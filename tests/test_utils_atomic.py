"""`zeroseg.utils.atomic`: a write through a temporary file that fails keeps its own error; staged folders
clean up after killed runs; what blocks replacing a folder is known before the work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_path, clean_stale_folders, replace_blocker, staged_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_failed_cleanup_keeps_the_original_error(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def read_only_unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise OSError(30, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(ValueError, match="the body's own error"), atomic_path(tmp_path / "out.json"):
        raise ValueError("the body's own error")
    with pytest.raises(ZerosegError, match="cannot write"), atomic_path(tmp_path / "f.bin") as tmp:
        raise OSError(28, "No space left on device", str(tmp))


#: A process id no process can have (above Linux's largest pid_max, 2**22): a run killed long ago.
DEAD_PID = 2**22 + 7


def test_staged_folder_removes_the_temp_folders_of_killed_runs(tmp_path):
    """`kill -9` during an export left `.NAME.tmp-PID` folders that nothing cleaned; the next
    `staged_folder` of the same --out removes those whose process is gone, and only those."""
    out = tmp_path / "bundle"
    out.mkdir()  # the bundle a --force export replaces
    dead = tmp_path / f".bundle.tmp-{DEAD_PID}"
    dead_old = tmp_path / f".bundle.old-{DEAD_PID}"  # a replaced bundle not yet deleted
    live = tmp_path / f".bundle.tmp-{os.getppid()}"  # a run still going (our parent is alive)
    other = tmp_path / f".other.tmp-{DEAD_PID}"  # another output's: not ours to judge here
    for folder in (dead, dead_old, live, other):
        folder.mkdir()
        (folder / "graph.onnx").write_bytes(b"half")
    with staged_folder(out, what="the bundle") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert not dead_old.exists()  # `out` exists: the old copy was garbage
    assert (out / "manifest.json").is_file()


def test_an_old_folder_is_kept_while_it_is_the_only_copy(tmp_path):
    """Killed between `install_folder`'s two renames: `.NAME.old-PID` is the only copy of NAME."""
    out = tmp_path / "bundle"
    only = tmp_path / f".bundle.old-{DEAD_PID}"
    only.mkdir()
    assert clean_stale_folders(out) == [] and only.is_dir()


def test_replace_blocker(tmp_path, monkeypatch):
    """What keeps `install_folder` from moving a folder aside (see test_export_cli for the CLI);
    as root, permission bits stop nothing, so the sticky rule is checked for an ordinary user."""
    out = tmp_path / "bundle"
    out.mkdir()
    assert replace_blocker(out) is None
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out)
    assert "mount point" in replace_blocker(out)
    monkeypatch.undo()
    tmp_path.chmod(0o1777)
    os.chown(out, 4242, 4242)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "another user" in replace_blocker(out)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # our own folder: fine
    assert replace_blocker(out) is None


def test_a_failed_install_is_one_line_and_keeps_the_old_folder(tmp_path, monkeypatch):
    """Whatever still fails at the very end (a race after the checks) is one ZerosegError, and the
    folder being replaced is put back: never neither the old nor the new one."""
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    real = os.replace

    def refuse_install(src, dst):
        if Path(src).name.startswith(".bundle.tmp-"):
            raise PermissionError(1, "Operation not permitted")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_install)
    with pytest.raises(ZerosegError, match="cannot install the bundle at .*operation not permitted"):
        with staged_folder(out, what="the bundle") as tmp:
            (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert (out / "old.txt").read_text() == "keep"
