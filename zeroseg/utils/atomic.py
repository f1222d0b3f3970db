"""Atomic file writes: a temp file beside the target, fsync, rename.

A reader (or a crash) never sees a half-written checkpoint, PNG or JSON: either the old file or the
new one exists. Interrupted writes leave no temp file behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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


def install_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move a finished folder `tmp` to `out`; an existing `out` (--force) is replaced only once the new
    one is complete, so a failure leaves the old one in place. Both must be on one filesystem."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = out.absolute().parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.absolute().parent)


@contextmanager
def staged_folder(out: str | os.PathLike, *, what: str = "a folder") -> Iterator[Path]:
    """A temporary folder beside `out` to build into; `install_folder`ed onto `out` when the block
    ends normally, removed (nothing left behind) when it raises.

    Args:
        out: the folder the finished result becomes.
        what: how the error message names it ("the bundle", ...).

    Returns:
        (yields) the temporary folder.
    """
    out = Path(out)
    tmp = out.absolute().parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ZerosegError(
            f"cannot create {what} next to {out} ({exc.strerror}); pick another --out"
        ) from None
    try:
        yield tmp
        install_folder(tmp, out)  # --force: the old one goes only once this is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
