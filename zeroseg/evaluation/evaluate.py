"""mIoU of a segmenter on a VOC-layout data set (mmseg semantics, see `zeroseg.evaluation.metrics`).

Any object with the `Segmenter` call signature can be scored: the trained ZeroSeg student, the
MaskCLIP-style baseline on its teacher, or an oracle. The data set's class list fixes the label
space: with `background` first, label 0 is background and predictions below the threshold land
there; without it (Context59-style, reduce_zero_label), every pixel gets a real class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from zeroseg.data.voc import VOCDataset
from zeroseg.errors import ZerosegError
from zeroseg.evaluation.metrics import SegmentationMeter


class SegmenterLike(Protocol):
    """What `evaluate` needs: segment a batch of images into a class list."""

    def __call__(
        self,
        images: Sequence[Image.Image],
        classes: Sequence[Sequence[str]],
        *,
        bg_thresh: float | None = None,
        bg_prompt: bool | None = None,
        background: bool = True,
        batch_size: int = 8,
    ) -> list[Any]: ...


@dataclass
class EvalReport:
    """Scores of one evaluation, JSON-ready through `to_dict`."""

    summary: dict[str, Any]
    class_names: list[str]
    table: str
    seconds: float
    settings: dict[str, Any]

    @property
    def miou(self) -> float:
        """The mIoU of the summary (0.0 when undefined)."""
        return float(self.summary["mIoU"] or 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (mIoU, aAcc, per-class IoU, summary, seconds, settings)."""
        return {
            "mIoU": self.summary["mIoU"],
            "aAcc": self.summary["aAcc"],
            "class_names": self.class_names,
            "per_class_IoU": dict(zip(self.class_names, self.summary["IoU"], strict=True)),
            "summary": self.summary,
            "seconds": self.seconds,
            "settings": self.settings,
        }


def evaluate(
    segmenter: SegmenterLike,
    dataset: VOCDataset,
    *,
    bg_thresh: float | None = None,
    bg_prompt: bool | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> EvalReport:
    """Segment every image of `dataset` (or the first `limit`) and accumulate the IoU statistics.

    Args:
        segmenter: anything with the `Segmenter` call (`SegmenterLike`).
        dataset: the split to score; its class list (`class_synonyms`) is passed to the segmenter
            and its `has_background` fixes whether label 0 is background.
        bg_thresh: the segmenter's background threshold (default: the model's tuned value).
        bg_prompt: also prompt "background" as a class (default: the model's setting).
        batch_size: images per segmenter call.
        limit: score only the first `limit` images.
        progress: show a progress bar with the running mIoU.
        on_warning: called with a one-line message when mask pixels hold values outside the classes.

    Returns:
        The `EvalReport`: mmseg-style summary (with mIoU_fg when there is a background), the
        per-class table, the wall time and the settings.

    Raises:
        ZerosegError: bg_thresh outside [0, 1], a non-positive batch_size or limit, or an empty split.
    """
    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if batch_size <= 0:
        raise ZerosegError(f"--batch-size must be positive, got {batch_size}")
    if limit is not None and limit <= 0:
        raise ZerosegError(f"--limit must be a positive number of images, got {limit}")
    count = len(dataset) if limit is None else min(len(dataset), limit)
    if count <= 0:
        raise ZerosegError("nothing to evaluate: the split is empty")
    meter = SegmentationMeter(dataset.num_classes)
    background = dataset.has_background
    start = time.perf_counter()
    with tqdm(total=count, disable=not progress, desc="eval", unit="img") as bar:
        for first in range(0, count, batch_size):
            items = [dataset[i] for i in range(first, min(count, first + batch_size))]
            results = segmenter(
                [image for image, _, _ in items],
                dataset.class_synonyms,
                bg_thresh=bg_thresh,
                bg_prompt=bg_prompt,
                background=background,
                batch_size=batch_size,
            )
            for result, (_, mask, _) in zip(results, items, strict=True):
                meter.update(np.asarray(result.labels), mask)
            bar.update(len(items))
            if meter.num_images:
                bar.set_postfix(mIoU=f"{meter.miou():.3f}")
    if meter.out_of_range_pixels and on_warning is not None:
        on_warning(
            f"{meter.out_of_range_pixels} mask pixels hold values outside the {dataset.num_classes} classes;"
            " they were counted as ignore"
        )
    summary = meter.summary(background_index=0 if background else None)
    settings = {"split": dataset.split, "images": count, "bg_thresh": bg_thresh, "bg_prompt": bg_prompt}
    return EvalReport(
        summary,
        list(dataset.class_names),
        meter.format_table(dataset.class_names),
        time.perf_counter() - start,
        settings,
    )
