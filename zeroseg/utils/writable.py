"""Checks made before the compute: can the outputs be written, and does the work fit in memory?

Every command calls these on its outputs first, so an unwritable `--out` (a file in the way, a
read-only file system, no permission) is one line before any minute of compute, not a traceback
after it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zeroseg.errors import ZerosegError


def ensure_writable_dir(folder: str | os.PathLike, flag: str = "--out", *, create: bool = True) -> Path:
    """Create `folder` if needed and prove that a file can be written in it.

    Args:
        folder: the output folder.
        flag: the option that named it, for the message.
        create: False: create nothing; check the folder, or the nearest folder above it that exists
            (where it would be created), instead.

    Returns:
        The folder.

    Raises:
        ZerosegError: it (or a parent) is a file, or the file system refuses the write.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ZerosegError(f"{flag} {folder} is a file; pass a folder")
    target = folder
    if not create:
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise ZerosegError(f"{flag} {folder}: a part of the path is a file, not a folder")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".zeroseg-probe-")
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise ZerosegError(f"{flag} {folder}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise ZerosegError(
            f"{flag} {folder} is not writable ({(exc.strerror or str(exc)).lower()}); choose another folder"
        ) from None
    return folder


def ensure_writable_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that the file `path` can be written (its folder is created); it is not created itself."""
    path = Path(path)
    if path.is_dir():
        raise ZerosegError(f"{flag} {path} is a folder; pass a file name")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), flag)
    return path


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
