"""Read access to a teacher feature cache for training: `TeacherCache`.

`zeroseg.teacher.cache.build_cache` writes the cache (layout and manifest:
`zeroseg.teacher.cache_files`); `TeacherCache.open` checks it against the run (teacher, grids, image
size, images) and memory-maps its features lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zeroseg.data.sources import ImageSource
from zeroseg.errors import ZerosegError
from zeroseg.teacher.cache_files import (
    CACHE_FORMAT,
    CACHE_VERSION,
    DONE,
    MANIFEST,
    TODO,
    check_source,
    open_arrays,
    read_manifest,
)
from zeroseg.teacher.views import check_grids


class TeacherCache:
    """Read access to a finished (or, with allow_partial, unfinished) teacher cache for training.

    Made by `TeacherCache.open`. `features(indices)` reads the rows, `valid` says which rows hold
    features; `keys`, `grids`, `num_views`, `embed_dim` and `teacher_fingerprint` come from the
    manifest. The arrays are memory-mapped lazily (DataLoader workers map them again).

    Args:
        path: the cache folder.
        manifest: its parsed manifest.json.
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self._arrays: tuple[np.memmap, np.memmap] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        source: ImageSource | None = None,
        teacher_fingerprint: str | None = None,
        grids=None,
        image_size: int | None = None,
        allow_partial: bool = False,
    ) -> TeacherCache:
        """Open the cache at `path`, checking everything given against its manifest.

        Args:
            path: a folder written by `build_cache` (`zeroseg cache-teacher`).
            source: the training images; their keys and signatures must be the cached ones.
            teacher_fingerprint: the training teacher's `Teacher.fingerprint`.
            grids: the grid sizes training expects.
            image_size: the crop size training expects.
            allow_partial: accept a cache with images still to encode (their rows are zeros).

        Returns:
            The opened `TeacherCache`.

        Raises:
            ZerosegError: no cache at `path`, another format or version, a mismatch with any argument
                given, or an incomplete cache without `allow_partial`.
        """
        path = Path(path)
        fix = "re-run cache-teacher or drop --teacher-cache"
        if not (path / MANIFEST).is_file():
            raise ZerosegError(f"no teacher cache at {path}: run `zeroseg cache-teacher --out {path}` first")
        m = read_manifest(path)
        if m.get("format") != CACHE_FORMAT or int(m.get("version", 0)) != CACHE_VERSION:
            raise ZerosegError(f"{path} is not a zeroseg teacher cache of version {CACHE_VERSION}: {fix}")
        fp = m["teacher"]["fingerprint"]
        if teacher_fingerprint is not None and teacher_fingerprint != fp:
            raise ZerosegError(
                f"teacher cache {path} was made by teacher {fp}, not {teacher_fingerprint}: {fix}"
            )
        if grids is not None and list(check_grids(grids)) != m["grids"]:
            raise ZerosegError(
                f"teacher cache {path} has grids {m['grids']}, not {list(check_grids(grids))}: {fix}"
            )
        if image_size is not None and int(image_size) != m["image_size"]:
            raise ZerosegError(
                f"teacher cache {path} was made at image size {m['image_size']}, not {image_size}: {fix}"
            )
        if source is not None:
            check_source(m, list(source.keys), source.signatures(), str(path), fix)
        cache = cls(path, m)
        todo = int((cache.status == TODO).sum())
        if todo and not allow_partial:
            raise ZerosegError(
                f"teacher cache {path} is incomplete ({todo} of {len(cache)} images still to encode): "
                "re-run the same cache-teacher command to finish it"
            )
        return cache

    def _open(self) -> tuple[np.memmap, np.memmap]:
        if self._arrays is None:
            self._arrays = open_arrays(self.path, self.manifest, "r")
        return self._arrays

    def __getstate__(self) -> dict:  # DataLoader workers re-map the files instead of copying them
        return {"path": self.path, "manifest": self.manifest, "_arrays": None}

    def __len__(self) -> int:
        return len(self.manifest["keys"])

    @property
    def keys(self) -> list[str]:
        """The image keys, in row order."""
        return self.manifest["keys"]

    @property
    def grids(self) -> tuple[int, ...]:
        """The grid sizes of the views."""
        return tuple(self.manifest["grids"])

    @property
    def num_views(self) -> int:
        """V, the views per image."""
        return int(self.manifest["num_views"])

    @property
    def embed_dim(self) -> int:
        """E, the teacher's embedding dimension."""
        return int(self.manifest["embed_dim"])

    @property
    def teacher_fingerprint(self) -> str:
        """The `Teacher.fingerprint` of the teacher that made the cache."""
        return self.manifest["teacher"]["fingerprint"]

    @property
    def status(self) -> np.ndarray:
        """uint8 (N,): 0 to do, 1 done, 2 unreadable."""
        return np.asarray(self._open()[1])

    @property
    def valid(self) -> torch.Tensor:
        """Bool (N,): True where features are present (done, not unreadable)."""
        return torch.from_numpy(self.status == DONE)

    def features(self, indices) -> torch.Tensor:
        """Cached teacher features of some images.

        Args:
            indices: image indices (a sequence, array or tensor of n row numbers).

        Returns:
            (n, V, E) float32 unit-norm features (rows of unencoded images are zeros).
        """
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        # copied into torch's own 64-byte aligned memory: numpy's buffers are 16-byte aligned, so where
        # a batch starts would change from run to run, and MKL promises equal results for unaligned
        # data only in its reproducible mode (zeroseg/__init__.py sets it, a user may not)
        return torch.from_numpy(np.asarray(self._open()[0][idx])).to(torch.float32, copy=True)
