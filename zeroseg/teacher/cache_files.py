"""The files of a teacher cache folder: their layout, the manifest, and the checks on both.

Layout of a cache folder C:
  C/manifest.json  format, version, teacher spec + fingerprint, grids, image size, embed dim, dtype,
                   the ordered image keys with their signatures, counts. Written (atomically) first.
  C/features.npy   (N, V, E) memmap of unit-norm features (float16 by default).
  C/status.npy     (N,) uint8 memmap: 0 to do, 1 done, 2 unreadable (skipped, not retried).
Re-using a folder with another teacher, grid set, image list, size or dtype is refused in one line.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from zeroseg.data.sources import ImageSource
from zeroseg.errors import ZerosegError
from zeroseg.teacher.clip import Teacher
from zeroseg.teacher.views import check_grids, num_views
from zeroseg.utils.atomic import atomic_write_json

CACHE_FORMAT = "zeroseg-teacher-cache"
CACHE_VERSION = 1
MANIFEST, FEATURES, STATUS = "manifest.json", "features.npy", "status.npy"
TODO, DONE, UNREADABLE = 0, 1, 2
DTYPES = ("float16", "float32")
VIEW_ORDER = "full image first, then each grid in increasing size, cells row-major"
REDO = "use a new --out, or --overwrite to rebuild it"


def check_cache_args(grids, image_size: int, dtype: str, batch_size: int = 1) -> tuple[int, ...]:
    """Validate cache parameters (one-line ZerosegErrors); returns the canonical grids."""
    grids = check_grids(grids)
    if int(image_size) < 16:
        raise ZerosegError(f"--image-size must be at least 16 pixels, got {image_size}")
    if max(grids) > int(image_size):
        raise ZerosegError(f"a {max(grids)}x{max(grids)} grid does not fit {image_size}-pixel images")
    if dtype not in DTYPES:
        raise ZerosegError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if int(batch_size) < 1:
        raise ZerosegError(f"--batch-size must be positive, got {batch_size}")
    return grids


def expected_manifest(source: ImageSource, teacher: Teacher, grids, image_size: int, dtype: str) -> dict:
    """The manifest a cache of `source` under these settings must have."""
    import open_clip

    from zeroseg import __version__

    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": {
            "spec": teacher.spec,
            "fingerprint": teacher.fingerprint,
            "input_size": teacher.image_size,
            "mean": list(teacher.mean),
            "std": list(teacher.std),
        },
        "grids": list(grids),
        "num_views": num_views(grids),
        "view_order": VIEW_ORDER,
        "normalized": True,
        "image_size": int(image_size),
        "crop": "center",
        "embed_dim": teacher.embed_dim,
        "dtype": dtype,
        "source": {
            "kind": source.kind,
            "root": str(Path(source.root).resolve()) if source.root else None,
            "count": len(source),
        },
        "counts": {"total": len(source), "done": 0, "unreadable": 0, "todo": len(source)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"zeroseg": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__},
        "keys": list(source.keys),
        "signatures": source.signatures(),
    }


#: Manifest entries every reader relies on (a manifest without one is damaged).
_REQUIRED = (
    "format",
    "version",
    "teacher",
    "grids",
    "num_views",
    "image_size",
    "embed_dim",
    "dtype",
    "keys",
    "signatures",
)
_REQUIRED_TEACHER = ("spec", "fingerprint")


def read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ZerosegError(
            f"teacher cache manifest {out / MANIFEST} is unreadable ({type(exc).__name__}): {REDO}"
        ) from None
    teacher = manifest.get("teacher") if isinstance(manifest, dict) else None
    missing = [k for k in _REQUIRED if k not in manifest] if isinstance(manifest, dict) else ["(everything)"]
    missing += [f"teacher.{k}" for k in _REQUIRED_TEACHER if isinstance(teacher, dict) and k not in teacher]
    if missing or not isinstance(teacher, dict):
        raise ZerosegError(
            f"teacher cache manifest {out / MANIFEST} is damaged "
            f"(missing {', '.join(missing) or 'teacher'}): {REDO}"
        )
    return manifest


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def check_source(manifest: dict, keys: list[str], signatures: list[str] | None, where: str, fix: str) -> None:
    """Refuse when the images (keys, and signatures if given) differ from the manifest's."""
    old = manifest["keys"]
    if old != keys:
        i = _first_difference(old, keys)
        first = keys[i] if i < len(keys) else old[i]
        raise ZerosegError(
            f"the images differ from those of teacher cache {where} ({len(keys)} now, {len(old)} cached; "
            f"first difference: {first}): {fix}"
        )
    if signatures is not None and manifest["signatures"] != signatures:
        changed = [k for k, a, b in zip(keys, manifest["signatures"], signatures, strict=True) if a != b]
        raise ZerosegError(
            f"{len(changed)} image(s) changed since teacher cache {where} was made "
            f"(first: {changed[0]}): {fix}"
        )


def _check_same(old: dict, new: dict, out: Path) -> None:
    if old.get("format") != CACHE_FORMAT or int(old.get("version", 0)) != CACHE_VERSION:
        raise ZerosegError(f"{out} holds no zeroseg teacher cache of version {CACHE_VERSION}: {REDO}")
    ot, nt = old["teacher"], new["teacher"]
    if ot["fingerprint"] != nt["fingerprint"]:
        raise ZerosegError(
            f"teacher cache {out} was made by teacher {ot['spec']} ({ot['fingerprint']}), "
            f"not {nt['spec']} ({nt['fingerprint']}): {REDO}"
        )
    for field, flag in (("grids", "--grids"), ("image_size", "--image-size"), ("dtype", "--dtype")):
        if old[field] != new[field]:
            raise ZerosegError(f"teacher cache {out} has {flag} {old[field]}, not {new[field]}: {REDO}")
    check_source(old, new["keys"], new["signatures"], str(out), REDO)


def open_arrays(out: Path, manifest: dict, mode: str) -> tuple[np.memmap, np.memmap]:
    n, v, e = len(manifest["keys"]), manifest["num_views"], manifest["embed_dim"]
    try:
        feats = np.lib.format.open_memmap(out / FEATURES, mode=mode)
        status = np.lib.format.open_memmap(out / STATUS, mode=mode)
    except (OSError, ValueError) as exc:
        raise ZerosegError(f"teacher cache {out} is damaged ({type(exc).__name__}): {REDO}") from None
    if feats.shape != (n, v, e) or feats.dtype != np.dtype(manifest["dtype"]) or status.shape != (n,):
        raise ZerosegError(f"teacher cache {out} has arrays that do not match its manifest: {REDO}")
    return feats, status


def prepare_cache(out: Path, manifest: dict, *, overwrite: bool = False) -> None:
    """Create the cache files, or check that existing ones are the same cache (then it resumes)."""
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / MANIFEST, out / FEATURES, out / STATUS]
    if overwrite:
        for p in paths:
            p.unlink(missing_ok=True)
    if (out / MANIFEST).exists():
        _check_same(read_manifest(out), manifest, out)
        try:
            open_arrays(out, manifest, "r")
            return
        except ZerosegError:  # interrupted between writing the manifest and creating the arrays
            pass
    elif (out / FEATURES).exists() or (out / STATUS).exists():
        raise ZerosegError(f"{out} holds cache arrays without a manifest: {REDO}")
    n, v, e = len(manifest["keys"]), manifest["num_views"], manifest["embed_dim"]
    need = n * v * e * np.dtype(manifest["dtype"]).itemsize
    free = shutil.disk_usage(out).free
    if need > free:
        raise ZerosegError(
            f"the teacher cache needs {need / 2**30:.1f} GiB but {out} has {free / 2**30:.1f} GiB free"
        )
    atomic_write_json(out / MANIFEST, manifest)
    (out / STATUS).unlink(missing_ok=True)  # status last-in, so a crash here leaves nothing marked done
    np.lib.format.open_memmap(
        out / FEATURES, mode="w+", dtype=np.dtype(manifest["dtype"]), shape=(n, v, e)
    ).flush()
    np.lib.format.open_memmap(out / STATUS, mode="w+", dtype=np.uint8, shape=(n,)).flush()
