"""Atomic file writes: a temp file beside the target, fsync, rename.

A reader (or a crash) never sees a half-written checkpoint, PNG or JSON: either the old file or the
new one exists. Interrupted writes leave no temp file behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto `final`.

    The temp file keeps `final`'s suffix (so PIL/np pick the right format) and is removed if the
    body raises, including on KeyboardInterrupt.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. a read-only file system: keep the original error, not this one
            pass
        if isinstance(exc, OSError):
            raise ZerosegError(f"cannot write {final}: {_why(exc)}; choose a writable folder") from None
        raise


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(final: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `final` atomically."""
    atomic_write_bytes(final, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(final: str | os.PathLike, obj: Any) -> None:
    """`torch.save` to `final` atomically; a failed write (full disk, read-only folder) is a
    one-line ZerosegError and leaves the previous file in place."""
    import torch

    try:
        with atomic_path(final) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as exc:  # torch reports a failed write (full disk) as RuntimeError (inline_container)
        if not any(marker in str(exc) for marker in ("inline_container", "enforce fail", "write")):
            raise
        raise ZerosegError(
            f"cannot write {final}: {_why(exc)}; free space or choose another folder"
        ) from None


def _why(exc: BaseException) -> str:
    """A short reason for a failed write."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "write failed (disk full?)" if "inline_container" in text or "enforce fail" in text else text[:120]


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(\.[^.]*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files (`.<name>.tmp-<pid><suffix>`) that `atomic_path` writers left behind
    when they were killed (their process is gone); returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file() or int(match.group(1)) == os.getpid():
            continue
        if not _alive(int(match.group(1))):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def clean_stale_folders(out: str | os.PathLike) -> list[Path]:
    """Remove the folders that a killed `staged_folder` (or `install_folder`) left beside `out`.

    `.<name>.tmp-<pid>` (a build that never finished) goes when its process is gone; `.<name>.old-<pid>`
    (a replaced folder not yet deleted) goes when its process is gone and `out` exists (otherwise it
    is the only copy left and is kept). A live process's folders are never touched.

    Returns:
        The folders removed.
    """
    out = Path(out)
    parent = out.absolute().parent
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)(?:-\d+)?$")
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = pattern.match(path.name)
        if match is None or int(match.group(2)) == os.getpid() or _alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not out.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


#: FS_IOC_GETFLAGS (Linux) and the inode flags that forbid renaming or deleting an entry.
_FS_IOC_GETFLAGS = 0x80086601
_IMMUTABLE_FL, _APPEND_FL = 0x10, 0x20


def _inode_flags(path: Path) -> int:
    """The inode flags `chattr` sets (0 where the file system or the platform cannot tell)."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return 0
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf)
        return int.from_bytes(buf[:4], "little")
    except OSError:
        return 0
    finally:
        os.close(fd)


def replace_blocker(out: str | os.PathLike) -> str | None:
    """Why `install_folder` could not move the existing folder `out` aside, or None when it can.

    The rename needs: `out` not a mount point, neither `out` nor its parent immutable or append-only
    (`chattr +i` / `+a`), a writable parent, and in a sticky parent (`/tmp`) a folder of our own.
    Checked before any work so that `--force` over such a folder is one line, not an error at the end.

    Args:
        out: an existing folder.

    Returns:
        A short reason ("is a mount point", ...), or None.
    """
    out = Path(out)
    parent = out.absolute().parent
    if os.path.ismount(out):
        return "it is a mount point, which cannot be moved or deleted (replace its contents by hand)"
    if _inode_flags(out) & (_IMMUTABLE_FL | _APPEND_FL):
        return "it is immutable or append-only (chattr -i / -a it first)"
    if _inode_flags(parent) & (_IMMUTABLE_FL | _APPEND_FL):
        return f"its folder {parent} is immutable or append-only (chattr -i / -a it first)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"its folder {parent} is not writable"
    try:
        here, there = out.lstat(), parent.stat()
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    euid = os.geteuid() if hasattr(os, "geteuid") else 0
    if there.st_mode & stat.S_ISVTX and euid != 0 and euid not in (here.st_uid, there.st_uid):
        return f"it belongs to another user (uid {here.st_uid}) in the sticky folder {parent}"
    return None


def install_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move a finished folder `tmp` to `out`; an existing `out` (--force) is replaced only once the new
    one is complete, so a failure leaves the old one in place. Both must be on one filesystem."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = out.absolute().parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)  # put the old one back: never neither
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.absolute().parent)


@contextmanager
def staged_folder(out: str | os.PathLike, *, what: str = "a folder") -> Iterator[Path]:
    """A temporary folder beside `out` to build into; `install_folder`ed onto `out` when the block
    ends normally, removed (nothing left behind) when it raises. Temporary folders of earlier runs
    that were killed (`kill -9`) are removed first (`clean_stale_folders`).

    Args:
        out: the folder the finished result becomes.
        what: how the error message names it ("the bundle", ...).

    Returns:
        (yields) the temporary folder.
    """
    out = Path(out)
    tmp = out.absolute().parent / f".{out.name}.tmp-{os.getpid()}"
    clean_stale_folders(out)  # those of runs killed with -9 (their process is gone)
    try:
        tmp.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ZerosegError(
            f"cannot create {what} next to {out} ({exc.strerror}); pick another --out"
        ) from None
    try:
        yield tmp
        try:
            install_folder(tmp, out)  # --force: the old one goes only once this is complete
        except OSError as exc:
            why = (exc.strerror or type(exc).__name__).lower()
            raise ZerosegError(f"cannot install {what} at {out} ({why}); pick another --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
