"""One writer per output folder: an OS-level lock file that a crashed process does not leave held.

`folder_lock(folder)` takes an exclusive, non-blocking `flock` on `<folder>/zeroseg.lock`. The lock
belongs to the open file, so the kernel drops it when the process exits, however it exits (kill -9
included); the file itself stays, harmlessly. A second writer is refused with one line naming the
holder's process id. Where `fcntl` does not exist (Windows) the lock is a no-op.
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ZerosegError(f"cannot write to the {what} {folder}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ZerosegError(
                f"the {what} {folder} is in use by another zeroseg process (pid {holder}); wait for it "
                "to finish or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
