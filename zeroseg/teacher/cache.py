"""The teacher feature cache: CLIP features of every grid view of every training image, made once.

`build_cache` fills a cache folder (layout and manifest: `zeroseg.teacher.cache_files`) and
`zeroseg.teacher.cache_reader.TeacherCache` reads it for training. Features of a batch are flushed
before its status, after every batch, so an interrupted run resumes where it stopped.

Sharding: under torchrun every rank encodes indices rank::world into its own rows of the same
memmaps (ranks must share one file system with coherent shared mmaps, e.g. one machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zeroseg.data.sources import CropDataset, ImageSource, collate_skip_none
from zeroseg.errors import ZerosegError
from zeroseg.teacher.cache_files import (
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
    grids = check_cache_args(grids, image_size, dtype, batch_size)
    rank, world_size = _ranks(rank, world_size)
    out = Path(out)
    manifest = _open_cache(
        out,
        source,
        rank,
        overwrite=overwrite,
        expected=lambda: expected_manifest(source, teacher, grids, image_size, dtype),
    )
    feats, status = open_arrays(out, manifest, "r+")
    todo = [i for i in range(rank, len(status), world_size) if status[i] == TODO]
    loader = _crops_loader(source, image_size, todo, batch_size, num_workers, teacher.device)
    label = f"teacher cache (rank {rank}/{world_size})" if world_size > 1 else "teacher cache"
    start = time.perf_counter()
    processed = _encode_all(
        loader,
        teacher,
        feats,
        status,
        grids,
        max_batch=max_batch,
        amp=amp,
        total=len(todo),
        label=label,
        progress=progress and rank == 0,
    )
    if _distributed():
        torch.distributed.barrier()
    seconds = time.perf_counter() - start
    processed = _sum_over_ranks(processed, teacher.device)
    summary = _summary(out, manifest, status, processed, seconds, rank, world_size)
    if rank == 0:
        _write_counts(out, manifest, summary)
    return summary


def _write_counts(out: Path, manifest: dict, summary: CacheSummary) -> None:
    """Record the cache's counts by status in its manifest (what `zeroseg cache-teacher` reports)."""
    manifest["counts"] = {
        "total": summary.total,
        "done": summary.done,
        "unreadable": summary.unreadable,
        "todo": summary.todo,
    }
    atomic_write_json(out / MANIFEST, manifest)


def _ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's rank and the number of ranks: as given, else torch.distributed's, else 0 of 1."""
    if rank is None or world_size is None:
        dist = _distributed()
        rank = torch.distributed.get_rank() if dist else 0
        world_size = torch.distributed.get_world_size() if dist else 1
    return rank, world_size


def _open_cache(
    out: Path, source: ImageSource, rank: int, *, overwrite: bool, expected: Callable[[], dict]
) -> dict:
    """Create, check or resume the cache at `out` against the manifest `expected()` makes (rank 0
    does, and tells the others if it failed),
    then return its manifest; the other ranks check that they see the same image list.

    Raises:
        ZerosegError: the folder holds a cache of other settings (without `overwrite`), too little
            disk space, or a rank sees other images.
    """
    error = None
    if rank == 0:
        try:
            prepare_cache(out, expected(), overwrite=overwrite)
        except ZerosegError as exc:
            error = str(exc)
    _share_error(error, rank)
    manifest = read_manifest(out)
    if rank != 0:
        check_source(manifest, list(source.keys), None, str(out), "all ranks must see the same images")
    return manifest


def _crops_loader(
    source: ImageSource,
    image_size: int,
    todo: list[int],
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> torch.utils.data.DataLoader:
    """Batches of the centre crops of the images `todo` (unreadable ones reported, not raised)."""
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(CropDataset(source, image_size), todo),
        batch_size=int(batch_size),
        num_workers=int(num_workers),
        collate_fn=collate_skip_none,
        pin_memory=device.type == "cuda",
    )


def _encode_all(
    loader: torch.utils.data.DataLoader,
    teacher: Teacher,
    feats: np.memmap,
    status: np.memmap,
    grids: tuple[int, ...],
    *,
    max_batch: int | None,
    amp: bool,
    total: int,
    label: str,
    progress: bool,
) -> int:
    """Encode the loader's images into their rows of `feats` and mark them done (or unreadable) in
    `status`, flushing each batch's features before its status so that an interrupted run resumes.

    Returns:
        The number of images this process handled (encoded or skipped as unreadable).
    """
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc=label, disable=not progress, dynamic_ncols=True)
    processed = 0
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
    return processed


def _sum_over_ranks(processed: int, device: torch.device) -> int:
    """`processed` summed over the ranks of a distributed run (itself when not distributed)."""
    if not _distributed():
        return processed
    on_gpu = torch.distributed.get_backend() == "nccl"
    box = torch.tensor([processed], dtype=torch.long, device=device if on_gpu else "cpu")
    torch.distributed.all_reduce(box)
    return int(box.item())


def _summary(
    out: Path,
    manifest: dict,
    status: np.ndarray,
    processed: int,
    seconds: float,
    rank: int,
    world_size: int,
) -> CacheSummary:
    """The run's `CacheSummary`: the cache's counts by status and up to three unreadable keys."""
    counts = np.bincount(np.asarray(status), minlength=3)
    examples = tuple(manifest["keys"][i] for i in np.flatnonzero(np.asarray(status) == UNREADABLE)[:3])
    return CacheSummary(
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
