"""The teacher feature cache: CLIP features of every grid view of every training image, made once.

`build_cache` fills a cache folder (layout and manifest: `zeroseg.teacher.cache_files`) and
`TeacherCache` reads it for training. Features of a batch are flushed before its status, after every
batch, so an interrupted run resumes where it stopped.

Sharding: under torchrun every rank encodes indices rank::world into its own rows of the same
memmaps (ranks must share one file system with coherent shared mmaps, e.g. one machine).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zeroseg.data.sources import CropDataset, ImageSource, collate_skip_none
from zeroseg.errors import ZerosegError
from zeroseg.teacher.cache_files import (
    CACHE_FORMAT,
    CACHE_VERSION,
    DONE,
    MANIFEST,
    TODO,
    UNREADABLE,
    check_cache_args,
    check_source,
    expected_manifest,
    open_arrays,
    prepare_cache,
    read_manifest,
)
from zeroseg.teacher.clip import Teacher
from zeroseg.teacher.views import check_grids
from zeroseg.utils.atomic import atomic_write_json


@dataclass
class CacheSummary:
    """What a cache run did; `line()` is the final report."""

    out: str
    total: int
    done: int
    unreadable: int
    processed: int
    seconds: float
    rank: int = 0
    world_size: int = 1
    examples: tuple[str, ...] = ()

    @property
    def todo(self) -> int:
        return self.total - self.done - self.unreadable

    def line(self) -> str:
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"teacher cache {self.out}: {self.done}/{self.total} done, {self.unreadable} unreadable skipped, "
            f"{self.todo} left; this run {self.processed} images in {self.seconds:.1f} s ({rate:.1f} images/s"
            + (f", {self.world_size} ranks)" if self.world_size > 1 else ")")
        )
        if self.examples:
            text += f"; unreadable e.g. {', '.join(self.examples)}"
        return text


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _share_error(message: str | None, rank: int) -> None:
    """Rank 0's preparation error (or None) reaches every rank, so no rank waits forever."""
    if _distributed():
        box = [message]
        torch.distributed.broadcast_object_list(box, src=0)
        message = box[0]
    if message:
        raise ZerosegError(message if rank == 0 else f"rank 0 failed: {message}")


def build_cache(
    source: ImageSource,
    teacher: Teacher,
    out: str | os.PathLike,
    *,
    grids=(1, 2, 3, 4),
    image_size: int = 224,
    batch_size: int = 64,
    dtype: str = "float16",
    num_workers: int = 0,
    overwrite: bool = False,
    max_batch: int | None = None,
    amp: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> CacheSummary:
    """Encode every image's grid views with the teacher into the cache at `out` (resumes if present).

    Args:
        source: the training images, in the order of the cache rows.
        teacher: the frozen CLIP whose features are cached.
        out: the cache folder (created; an existing cache of the same settings is resumed).
        grids: the grid sizes of the views (see `check_grids`).
        image_size: side of the centre crop each image is cut to before its views.
        batch_size: images per teacher batch.
        dtype: "float16" or "float32", the stored feature dtype.
        num_workers: DataLoader workers that decode the images.
        overwrite: delete an existing cache at `out` and rebuild it.
        max_batch: at most this many views per teacher forward (bounds memory).
        amp: run the teacher under CUDA float16 autocast.
        rank: this process's rank (default: torch.distributed's if initialised, else 0); each rank
            encodes the indices rank::world_size.
        world_size: the number of ranks (default: torch.distributed's if initialised, else 1).
        progress: show a progress bar (rank 0 only).

    Returns:
        This rank's `CacheSummary` (rank 0's has the totals).

    Raises:
        ZerosegError: invalid settings, or an existing cache at `out` made with another teacher, grid
            set, image size, dtype or image list (without `overwrite`), or too little disk space.
    """
    from tqdm import tqdm

    grids = check_cache_args(grids, image_size, dtype, batch_size)
    if rank is None or world_size is None:
        dist = _distributed()
        rank = torch.distributed.get_rank() if dist else 0
        world_size = torch.distributed.get_world_size() if dist else 1
    out = Path(out)
    error = None
    if rank == 0:
        try:
            prepare_cache(
                out, expected_manifest(source, teacher, grids, image_size, dtype), overwrite=overwrite
            )
        except ZerosegError as exc:
            error = str(exc)
    _share_error(error, rank)
    manifest = read_manifest(out)
    if rank != 0:
        check_source(manifest, list(source.keys), None, str(out), "all ranks must see the same images")
    feats, status = open_arrays(out, manifest, "r+")
    todo = [i for i in range(rank, len(status), world_size) if status[i] == TODO]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(CropDataset(source, image_size), todo),
        batch_size=int(batch_size),
        num_workers=int(num_workers),
        collate_fn=collate_skip_none,
        pin_memory=teacher.device.type == "cuda",
    )
    label = f"teacher cache (rank {rank}/{world_size})" if world_size > 1 else "teacher cache"
    bar = tqdm(total=len(todo), unit="img", desc=label, disable=not progress or rank != 0, dynamic_ncols=True)
    start, processed = time.perf_counter(), 0
    try:
        for batch in loader:
            if batch["skipped_index"].numel():
                status[batch["skipped_index"].numpy()] = UNREADABLE
            idx = batch["index"].numpy()
            if idx.size:
                views = teacher.encode_views(batch["image"], grids, max_batch=max_batch, amp=amp)
                feats[idx] = views.cpu().numpy().astype(feats.dtype)
                feats.flush()  # features reach the file before their status says done
                status[idx] = DONE
            status.flush()
            processed += int(idx.size) + int(batch["skipped"])
            bar.update(int(idx.size) + int(batch["skipped"]))
    finally:
        feats.flush()
        status.flush()
        bar.close()
    if _distributed():
        torch.distributed.barrier()
    seconds = time.perf_counter() - start
    if _distributed():
        on_gpu = torch.distributed.get_backend() == "nccl"
        box = torch.tensor([processed], dtype=torch.long, device=teacher.device if on_gpu else "cpu")
        torch.distributed.all_reduce(box)
        processed = int(box.item())
    counts = np.bincount(np.asarray(status), minlength=3)
    examples = tuple(manifest["keys"][i] for i in np.flatnonzero(np.asarray(status) == UNREADABLE)[:3])
    summary = CacheSummary(
        str(out),
        len(status),
        int(counts[DONE]),
        int(counts[UNREADABLE]),
        processed,
        seconds,
        rank,
        world_size,
        examples,
    )
    if rank == 0:
        manifest["counts"] = {
            "total": summary.total,
            "done": summary.done,
            "unreadable": summary.unreadable,
            "todo": summary.todo,
        }
        atomic_write_json(out / MANIFEST, manifest)
    return summary


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
