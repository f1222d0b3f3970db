"""One writer per output folder: an OS-level lock file that a crashed process does not leave held.

`folder_lock(folder)` takes an exclusive, non-blocking `flock` on `<folder>/zeroseg.lock`. The lock
belongs to the open file, so the kernel drops it when the process exits, however it exits (kill -9
included); the file itself stays, harmlessly. A second writer is refused with one line naming the
holder's process id. `waiting_lock(path)` is the same lock on any file, waiting for the holder
instead (builders of a shared cache folder take turns: `zeroseg.utils.cache`). Where `fcntl` does not
exist (Windows) the locks are no-ops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zeroseg.errors import ZerosegError

LOCK_NAME = "zeroseg.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "folder") -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing) for the body.

    Args:
        folder: the run folder or cache folder to protect.
        what: how messages name it ("run folder", "teacher cache").

    Yields:
        The lock file's path.

    Raises:
        ZerosegError: another live process holds the lock, or the folder cannot be written.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    fd = _open_lock_file(path, what, folder)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ZerosegError(
                f"the {what} {folder} is in use by another zeroseg process (pid {holder}); wait for it "
                "to finish or choose another folder"
            ) from None
        _write_holder(fd)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def waiting_lock(path: str | os.PathLike, *, what: str = "lock file") -> Iterator[Path]:
    """Hold the exclusive lock of the file `path` (created, with its folder, if missing) for the
    body, waiting as long as another holder keeps it.

    Every call opens the file anew, so two threads of one process exclude each other too.

    Args:
        path: the lock file.
        what: how an error names what the lock guards.

    Yields:
        The lock file's path.

    Raises:
        ZerosegError: the lock file cannot be created.
    """
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield path
        return
    fd = _open_lock_file(path, what, path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write_holder(fd)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock_file(path: Path, what: str, folder: Path) -> int:
    """A read-write descriptor of the lock file `path` (its folder created); a one-line error else."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ZerosegError(f"cannot write to the {what} {folder}: {exc.strerror or exc}") from None


def _write_holder(fd: int) -> None:
    """Record this process's id in the held lock file (what a refused writer is told)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
