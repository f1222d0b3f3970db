"""The output-folder and size checks every exporter runs before it writes anything (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

from zeroseg.errors import ZerosegError


def check_out_folder(out: Path, force: bool) -> None:
    """Refuse an existing `out` without force, a file in its place, or a parent we cannot write.

    Args:
        out: the folder an exporter is about to write (`--out`).
        force: `--force`: an existing folder may be replaced.

    Raises:
        ZerosegError: one line naming --out and what to do.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder path to write")
    if out.exists() and not force:
        raise ZerosegError(f"--out {out} already exists; pass --force to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ZerosegError(f"cannot write --out {out}: {parent} is a file, not a folder; pick another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ZerosegError(f"cannot write --out {out}: {parent} is not writable; pick another --out")


def check_sides(short_side: int, max_side: int, patch: int) -> None:
    """Both sides positive multiples of the patch, short <= max."""
    for flag, value in (("--short-side", short_side), ("--max-side", max_side)):
        if value <= 0 or value % patch:
            raise ZerosegError(f"{flag} must be a positive multiple of the patch size {patch}, got {value}")
    if short_side > max_side:
        raise ZerosegError(f"--short-side {short_side} exceeds --max-side {max_side}")
