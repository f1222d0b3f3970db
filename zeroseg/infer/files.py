"""Segmenting image files into output files, streamed: what `zeroseg segment` runs.

Contracts (the README's "Guarantees"):
- Everything is checked before the first output is written: every input decodes, fits under
  `MAX_PIXELS` and in the memory available, the output folder is writable, no output would replace
  an input, and no output exists yet unless `overwrite` is given.
- Memory is flat in the number of images: images are decoded, segmented, written and dropped one
  batch at a time (only the list of paths is kept).
- Every label PNG of a run has the same format, chosen from the label space
  (`zeroseg.infer.visualize.label_png_bits`), and 255 never stands for a class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroseg.data.images import open_rgb
from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.labels import MAX_INFERENCE_SIDE, SegmentationResult
from zeroseg.infer.visualize import LABEL_PNG_VALUES, label_png_bits, save_label_png, save_overlay
from zeroseg.utils.atomic import atomic_write_json
from zeroseg.utils.writable import available_memory, ensure_writable_dir

#: Working memory per image pixel at full resolution (decoded RGB, the upsampled assignment and
#: probabilities of the head, the labels, the overlay's float buffers), measured on CPU with 8 segments.
BYTES_PER_PIXEL = 100
#: Memory the process needs besides the images (models, libraries).
BASE_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Outputs:
    """The three files written for one input image."""

    labels: Path
    overlay: Path
    json: Path

    def all(self) -> tuple[Path, Path, Path]:
        """The three paths."""
        return (self.labels, self.overlay, self.json)


def plan_outputs(images: Sequence[Path], out: Path, *, overwrite: bool = False) -> list[Outputs]:
    """Output paths per image, refused when they collide, replace an input or (without
    `overwrite`) exist already.

    Raises:
        ZerosegError: two inputs share a stem, an output is an input, or an output exists.
    """
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ZerosegError("two input images share a file name; their outputs would collide")
    plans = [
        Outputs(out / f"{p.stem}_labels.png", out / f"{p.stem}_overlay.png", out / f"{p.stem}.json")
        for p in images
    ]
    inputs = {_key(p) for p in images}
    for plan in plans:
        for path in plan.all():
            if _key(path) in inputs:
                raise ZerosegError(
                    f"an output would overwrite the input {path}; write to another --out folder"
                )
    if not overwrite:
        existing = [path for plan in plans for path in plan.all() if path.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ZerosegError(
                f"{existing[0]} already exists{more}; pass --overwrite to replace outputs, or choose "
                "another --out"
            )
    return plans


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def check_memory(
    name: str | os.PathLike, height: int, width: int, batch_pixels: int | None = None, *, fix: str = ""
) -> None:
    """Refuse an image whose estimated working memory exceeds what is available (one line).

    Args:
        name: how the message names the image.
        height, width: its size.
        batch_pixels: the pixels of every image segmented together with it (itself included), when
            it shares a batch; the estimate counts the images actually there, not the batch size.
        fix: what else the user may do (e.g. "lower --batch-size"), for the message.

    Raises:
        ZerosegError: the estimate exceeds `available_memory()`.
    """
    pixels = height * width if batch_pixels is None else max(batch_pixels, height * width)
    need = BASE_BYTES + BYTES_PER_PIXEL * pixels
    free = available_memory()
    if free is not None and need > free:
        batch = " with the images of its batch" if pixels > height * width else ""
        raise ZerosegError(
            f"{name} ({width}x{height}){batch} needs about {need / 2**30:.1f} GiB to segment but "
            f"{free / 2**30:.1f} GiB is available; {fix + ', ' if fix else ''}downscale it (the network "
            f"sees at most {MAX_INFERENCE_SIDE} px) or free memory"
        )


def check_batches_memory(names: Sequence[str | os.PathLike], sizes: Sequence[tuple[int, int]],
                         batch_size: int) -> None:  # fmt: skip
    """`check_memory` of each image with the images that share its batch (`batch_size` in a row).

    Args:
        names: the images, in order.
        sizes: their (height, width).
        batch_size: images segmented together.
    """
    for start in range(0, len(sizes), batch_size):
        chunk = sizes[start : start + batch_size]
        total = sum(h * w for h, w in chunk)
        largest = max(range(len(chunk)), key=lambda i: chunk[i][0] * chunk[i][1])
        fix = "lower --batch-size" if len(chunk) > 1 else ""
        check_memory(names[start + largest], *chunk[largest], total, fix=fix)


def write_result_json(
    path: Path,
    result: SegmentationResult,
    *,
    image: str,
    size: tuple[int, int],
    bits: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Write an image's JSON, atomically: what `zeroseg segment` and `zeroseg segment-dataset` write
    beside its label PNG (the same fields in the same order).

    Args:
        path: the JSON file.
        result: the image's segmentation.
        image: how the JSON names the image (its path, or 'shard.tar::member').
        size: the image's (width, height).
        bits: the bit depth of the run's label PNGs (`label_png_bits`).
        extra: more entries (e.g. the method).

    Returns:
        The class fractions written (label name -> share of pixels).
    """
    fractions = result.fractions()
    atomic_write_json(
        path,
        {
            "image": image,
            "size": list(size),
            "class_names": list(result.class_names),
            "fractions": fractions,
            "label_png": {"bits": bits, "values": LABEL_PNG_VALUES},
            **(extra or {}),
        },
    )
    return fractions


def segment_files(
    segmenter: SegmenterBase,
    images: Sequence[Path],
    classes: Any,
    out: Path,
    *,
    bg_thresh: float | None = None,
    bg_prompt: bool | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    on_result: Callable[[Path, SegmentationResult], None] | None = None,
) -> int:
    """Segment image files into `<stem>_labels.png`, `<stem>_overlay.png` and `<stem>.json` in `out`.

    Args:
        segmenter: any `SegmenterBase`.
        images: the input files.
        classes: the class entries (see `SegmenterBase.__call__`).
        out: the output folder (created).
        bg_thresh / bg_prompt: passed to the segmenter.
        batch_size: images decoded and segmented together (memory grows with it, not with the
            number of images).
        overwrite: replace existing outputs (never an input).
        extra: more entries for every JSON file (e.g. the method).
        on_result: called after each image's files are written.

    Returns:
        The number of files written.
    """
    if batch_size <= 0:
        raise ZerosegError(f"batch size must be positive (--batch-size), got {batch_size}")
    plans = plan_outputs(list(images), out, overwrite=overwrite)
    ensure_writable_dir(out, "--out", create=False)
    sizes = []
    for path in images:  # every input decodes (then is dropped) before anything is written
        image = open_rgb(path)
        sizes.append((image.height, image.width))
        del image
    check_batches_memory(list(images), sizes, batch_size)
    # the vocabulary too (cached for the batches): unknown words are refused or warned about first
    space, _ = segmenter.encode_classes(classes, bg_prompt=bg_prompt)
    bits = label_png_bits(len(space.names))
    ensure_writable_dir(out, "--out")
    written = 0
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        pil = [open_rgb(p) for p in chunk]
        results = segmenter(pil, classes, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size)
        for path, image, result, plan in zip(chunk, pil, results, plans[start:], strict=False):
            names = list(result.class_names)
            save_label_png(plan.labels, result.labels, num_labels=len(names))
            save_overlay(plan.overlay, image, result.labels, names, ignore_index=-1)
            write_result_json(plan.json, result, image=str(path), size=image.size, bits=bits, extra=extra)
            written += 3
            if on_result is not None:
                on_result(path, result)
        del pil, results
    return written
