"""Where a training run gets images and teacher targets: a cache on disk, or the live teacher.

With `--teacher-cache` the 30 CLIP features per image are read from the memory-mapped cache (the
paper precomputes them: training uses a centre crop only, so they never change); images the cache
marked unreadable are left out. With `--teacher` the views are encoded on the fly each step. Either
way the run also needs the teacher's text tower, which goes into every checkpoint so that
inference never needs the teacher again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, Subset

from zeroseg.classes import resolve_templates
from zeroseg.data.sources import CropDataset, ImageSource, collate_skip_none
from zeroseg.errors import ZerosegError
from zeroseg.teacher.cache_reader import TeacherCache
from zeroseg.teacher.load import load_teacher

if TYPE_CHECKING:
    from zeroseg.train.config import TrainConfig


@dataclass
class TrainingData:
    """A dataset of (index, centre crop) items plus the way to get their teacher features."""

    dataset: Dataset
    collate: Callable[[list], dict]
    targets: Callable[[dict, torch.Tensor], torch.Tensor]
    image_size: int
    embed_dim: int
    teacher_info: dict[str, Any]
    text_state: dict[str, Any]
    logit_scale: float
    templates: list[str]
    source: ImageSource | None = None


def _examples(source: ImageSource, indices: list[int]) -> str:
    names = [source.keys[i] for i in sorted(indices)[:3] if 0 <= i < len(source)]
    return ", ".join(names)


def no_readable_image(data: TrainingData, spec: str) -> str | None:
    """After an epoch without one readable image: the one-line error if no image of the data set
    decodes at all (every file is tried), None if some do (then training goes on)."""
    source = data.source
    if source is None:
        return f"no readable image in {spec}"
    bad = [i for i in range(len(source)) if source.load(i) is None]
    if len(bad) < len(source):
        return None
    return f"no readable image in {spec}: {len(bad)} files skipped, e.g. {_examples(source, bad)}"


def skipped_images_line(data: TrainingData, spec: str, indices: set[int]) -> str:
    """The warning that names the unreadable images training left out."""
    where = f" e.g. {_examples(data.source, list(indices))}" if data.source is not None else ""
    return f"skipped {len(indices)} unreadable image(s) in {spec} (left out of training):{where}"


def open_training_data(cfg: TrainConfig, device: torch.device, default_size: int) -> TrainingData:
    """Open images and teacher for `cfg`; every mismatch is a one-line ZerosegError."""
    templates = resolve_templates(cfg.templates)
    source = ImageSource.open(cfg.data)
    if len(source) == 0:
        raise ZerosegError(f"no images found in {cfg.data} (jpg, png, webp... or .tar shards)")
    if cfg.teacher_cache is None:
        teacher = load_teacher(cfg.teacher, device=device)
        size = cfg.image_size or default_size
        grids = tuple(cfg.grids)

        def live_targets(batch: dict, images01: torch.Tensor) -> torch.Tensor:
            return teacher.encode_views(images01, grids, amp=device.type == "cuda")

        dataset: Dataset = CropDataset(source, size)
        targets = live_targets
    else:
        cache = TeacherCache.open(cfg.teacher_cache, source=source, grids=cfg.grids)
        size = int(cache.manifest["image_size"])
        if cfg.image_size is not None and cfg.image_size != size:
            raise ZerosegError(
                f"--image-size {cfg.image_size} differs from the cache's image size {size}; "
                "drop it or re-cache"
            )
        spec = cfg.teacher or cache.manifest["teacher"]["spec"]
        teacher = load_teacher(spec, device="cpu")
        if teacher.fingerprint != cache.teacher_fingerprint:
            raise ZerosegError(
                f"teacher {spec} ({teacher.fingerprint}) is not the one that made the cache "
                f"({cache.teacher_fingerprint}); pass the same --teacher"
            )
        valid = torch.nonzero(cache.valid).flatten().tolist()
        if not valid:
            raise ZerosegError(f"the teacher cache {cfg.teacher_cache} holds no readable image")
        dataset = Subset(CropDataset(source, size), valid)

        def cached_targets(batch: dict, images01: torch.Tensor) -> torch.Tensor:
            return cache.features(batch["index"]).to(device, non_blocking=True)

        targets = cached_targets
    teacher_info = {
        "spec": teacher.spec,
        "fingerprint": teacher.fingerprint,
        "embed_dim": teacher.embed_dim,
        "input_size": teacher.image_size,
        "grids": list(cfg.grids),
    }
    return TrainingData(
        dataset=dataset,
        collate=collate_skip_none,
        targets=targets,
        image_size=size,
        embed_dim=teacher.embed_dim,
        teacher_info=teacher_info,
        text_state=teacher.text_state(),
        logit_scale=teacher.logit_scale,
        templates=templates,
        source=source,
    )
