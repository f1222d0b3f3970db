"""Build once into a folder keyed by a digest of its sources, under a file lock, atomically.

Several things are too slow to make on every run and must be remade when what they are made from
changes: the bench's exported bundles (`zeroseg.bench.compare.engines`), the C++ runner
(`zeroseg.export.aoti.cpp_build`), the bundles the test suite shares between its workers. They all
go through `build_once`:

- the folder's name (or the stamp's key) is a `source_digest` of everything the result depends on
  (checkpoint bytes, options, library versions, source files), so a change builds a new one;
- builders wait for each other on `zeroseg.utils.lock.waiting_lock` (`.<name>.lock` beside the
  folder): concurrent builders, threads or processes, build once and the others reuse the result;
- a build is complete when the stamp beside the folder (`.<name>.built`, written last and
  atomically) holds its key; by default it is built at a temporary path beside the folder and
  installed onto it only when the build returned, so no reader ever sees half a build.

Where `cache_dir` puts things: `$XDG_CACHE_HOME/zeroseg/...` (default `~/.cache/zeroseg/...`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_write_bytes, clean_stale_folders, install_folder
from zeroseg.utils.lock import waiting_lock

#: Hex digits of a `source_digest` (64 bits: collisions are not a concern for a cache).
DIGEST_LENGTH = 16


def cache_dir(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/zeroseg/<parts...>` (default `~/.cache/zeroseg/<parts...>`); not created."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "zeroseg", *parts)


def source_digest(*parts: str | bytes | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """`DIGEST_LENGTH` hex digits of the sha256 of `parts`, in order.

    A str is hashed as its UTF-8 bytes, bytes as they are, a path as its name (relative to `root`
    when given, so that a moved or renamed source counts as a change), a NUL, then its content.

    Raises:
        OSError: a path cannot be read.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            digest.update(part.encode())
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            path = Path(part)
            name = path.relative_to(root).as_posix() if root is not None else path.name
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def build_once(
    folder: str | os.PathLike, build: Callable[[Path], None], *, key: str = "", in_place: bool = False
) -> Path:
    """`folder`, made by `build` unless a complete build of `key` is there already.

    Args:
        folder: where the result lives; the lock (`.<name>.lock`) and the stamp (`.<name>.built`)
            sit beside it.
        build: writes the complete result at the path it is given: a temporary path beside
            `folder` that does not exist yet, or (`in_place`) `folder` itself as it is.
        key: what the stamp must hold for a build to be reused (e.g. a `source_digest`, when the
            folder's name does not already hold one).
        in_place: build straight into `folder` (a CMake build folder that a later build updates; a
            failed build leaves it as it is, unstamped) instead of at a temporary path installed
            onto `folder` once `build` returned (a failed build leaves nothing).

    Returns:
        `folder`, as a Path.

    Raises:
        Whatever `build` raises (nothing is stamped then); ZerosegError: a staged build wrote no
        folder, or the lock or the stamp cannot be written.
    """
    folder = Path(folder)
    stamp = folder.with_name(f".{folder.name}.built")
    text = f"{key or 'built'}\n"
    with waiting_lock(folder.with_name(f".{folder.name}.lock"), what="cache folder"):
        if folder.is_dir() and _read(stamp) == text:
            return folder
        stamp.unlink(missing_ok=True)
        if in_place:
            build(folder)
        else:
            _build_staged(folder, build)
        atomic_write_bytes(stamp, text.encode())  # last: a stamp means a complete build
    return folder


def _build_staged(folder: Path, build: Callable[[Path], None]) -> None:
    """`build` at a fresh temporary path beside `folder`, then installed onto it (replacing an old
    one only once the new one is complete); the temporary path is removed if anything fails."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    clean_stale_folders(folder)  # those of builders killed with -9 (their process is gone)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        if not tmp.is_dir():
            raise ZerosegError(f"building {folder} wrote nothing at {tmp}")
        install_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read(path: Path) -> str | None:
    """The text of a small file, or None when it cannot be read."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
