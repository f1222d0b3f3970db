"""The output-folder and size checks every exporter runs before it writes anything (torch-free)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import replace_blocker

#: What an exporter reads: a label (how the message names it) -> its path (None: not given).
Inputs = Mapping[str, str | os.PathLike | None]


def check_out_folder(
    out: Path, force: bool, *, inputs: Inputs | None = None, reuse: bool = False, flag: str = "--out"
) -> None:
    """Refuse an `out` that would destroy an input, an existing `out` without force, one that cannot
    be replaced, a file in its place, or a parent we cannot write (every exporter, before any work).

    Args:
        out: the folder an exporter is about to write (`--out`).
        force: `--force`: an existing folder may be replaced.
        inputs: what the export reads (checkpoint, bundle, calibration folder, labels file, ...):
            `out` may not be one of them, contain one, or lie inside one.
        reuse: an existing `out` is written into, not replaced (a build folder): it needs no force,
            but must itself be writable.
        flag: how the message names `out`.

    Raises:
        ZerosegError: one line naming `flag` and what to do.
    """
    out = Path(out)
    check_not_an_input(out, inputs or {}, flag=flag)
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"{flag} {out} is a file; pass a folder path to write")
    if out.exists() and reuse:
        if not os.access(out, os.W_OK | os.X_OK):
            raise ZerosegError(f"cannot write {flag} {out}: the folder is not writable; pick another {flag}")
    elif out.exists() and not force:
        raise ZerosegError(f"{flag} {out} already exists; pass --force to replace it")
    elif out.exists():
        why = replace_blocker(out)
        if why is not None:
            raise ZerosegError(f"--force cannot replace {flag} {out}: {why}; pick another {flag}")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ZerosegError(
            f"cannot write {flag} {out}: {parent} is a file, not a folder; pick another {flag}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ZerosegError(f"cannot write {flag} {out}: {parent} is not writable; pick another {flag}")


def check_not_an_input(out: Path, inputs: Inputs, *, flag: str = "--out") -> None:
    """Refuse an `out` that is, contains or lies inside one of the `inputs` (compared after
    resolving symbolic links): writing it, or replacing it with --force, would destroy what the
    export reads.

    Raises:
        ZerosegError: one line naming the input.
    """
    target = Path(os.path.realpath(out))
    for label, given in inputs.items():
        if given is None or str(given) == "":
            continue
        source = Path(os.path.realpath(given))
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "contains"
        elif source in target.parents:
            relation = "lies inside"
        else:
            continue
        raise ZerosegError(
            f"{flag} {out} {relation} {label} {given}: writing it would change or destroy an input of the "
            f"export; pick an {flag} outside it"
        )


def check_sides(short_side: int, max_side: int, patch: int) -> None:
    """Both sides positive multiples of the patch, short <= max."""
    for flag, value in (("--short-side", short_side), ("--max-side", max_side)):
        if value <= 0 or value % patch:
            raise ZerosegError(f"{flag} must be a positive multiple of the patch size {patch}, got {value}")
    if short_side > max_side:
        raise ZerosegError(f"--short-side {short_side} exceeds --max-side {max_side}")
