"""Segmenting and writing one batch of a data set: what the in-process and the Ray path share.

`process_batch` decodes, segments and writes a batch and returns its index rows; `write_outputs`
writes what `zeroseg segment` writes for an image (its label PNG, and its JSON with the same fields)
minus the overlay, the JSON last so that its presence marks the image complete (`complete_row`).

An image's outputs mirror its path in the source; the run's own files live apart, in `RUN_FOLDER`, and
`check_output_names` refuses, before any work, a source whose outputs would collide with each other
or with that folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.files import check_memory, write_result_json
from zeroseg.infer.labels import SegmentationResult
from zeroseg.infer.visualize import save_label_png
from zeroseg.serve.dataset.sources import Item, read_image

#: The folder of --out that holds the run's own files (run.json, index.jsonl, index.partial.jsonl):
#: no image's outputs go there, so no image, folder or shard name can collide with them.
RUN_FOLDER = "_zeroseg"


@dataclass(frozen=True)
class Job:
    """What every worker needs to segment and write a batch (picklable)."""

    classes: list[list[str]]
    out: str
    bg_thresh: float | None = None
    bg_prompt: bool | None = None
    batch_size: int = 8
    bits: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


def output_paths(item: Item, out: str | os.PathLike) -> tuple[Path, Path]:
    """(label PNG, JSON) of an item under the output folder."""
    base = Path(out) / item.out
    return base.with_name(base.name + "_labels.png"), base.with_name(base.name + ".json")


def check_output_names(items: Sequence[Item]) -> None:
    """Refuse a source whose outputs would collide, before any work: an image whose outputs would go
    into `RUN_FOLDER`, or an output file where another image's outputs need a folder of that name (an
    image `a.png` next to a folder `a_labels.png/` or `a.json/`, a shard `a.json.tar`).

    Raises:
        ZerosegError: one line naming the image(s) and the fix.
    """
    files: dict[str, tuple[str, str]] = {}
    folders: dict[str, str] = {}
    for item in items:
        parts = PurePosixPath(item.out).parts
        if parts and parts[0].casefold() == RUN_FOLDER.casefold():
            raise ZerosegError(
                f"{item.id}: its outputs would go into {parts[0]}/, the folder of the run's own files in "
                "--out; rename or move that folder or shard"
            )
        for path in output_paths(item, ""):
            files.setdefault(path.as_posix().casefold(), (path.as_posix(), item.id))
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]).casefold(), item.id)
    for key, (path, owner) in files.items():
        if key in folders:
            raise ZerosegError(
                f"{owner} writes {path}, but {folders[key]} needs a folder of that name for its outputs; "
                "rename one of them"
            )


def write_outputs(item: Item, image_size: tuple[int, int], result: SegmentationResult, job: Job) -> dict:
    """Write an item's label PNG and JSON (as `zeroseg.infer.files.segment_files` does); its index row."""
    labels_path, json_path = output_paths(item, job.out)
    save_label_png(labels_path, result.labels, num_labels=len(result.class_names))
    fractions = write_result_json(  # last: a JSON on disk means the image is complete
        json_path, result, image=item.source, size=image_size, bits=job.bits, extra=job.extra
    )
    return ok_row(item, list(image_size), fractions)


def ok_row(item: Item, size: list[int], fractions: dict[str, float]) -> dict:
    """The index row of a segmented image."""
    return {
        "id": item.id,
        "source": item.source,
        "size": size,
        "fractions": fractions,
        "status": "ok",
        "error": None,
    }


def failed_row(item: Item, reason: str) -> dict:
    """The index row of an image that could not be segmented."""
    return {
        "id": item.id,
        "source": item.source,
        "size": None,
        "fractions": None,
        "status": "failed",
        "error": reason,
    }


def process_batch(segmenter: SegmenterBase, items: Sequence[Item], job: Job) -> list[dict]:
    """Decode, segment and write a batch; one index row per item, in order (the local and the Ray path).

    An image that does not decode or does not fit in memory is a failed row; if the batch's call fails,
    its images are retried one by one so that only the guilty one fails.
    """
    rows: dict[str, dict] = {}
    decoded = []
    for item in items:
        try:
            image = read_image(item)
            check_memory(item.id, image.height, image.width)
            decoded.append((item, image))
        except ZerosegError as exc:
            rows[item.id] = failed_row(item, str(exc))
    if decoded:
        kwargs = {"bg_thresh": job.bg_thresh, "bg_prompt": job.bg_prompt, "batch_size": job.batch_size}
        try:
            results: list[SegmentationResult | None] = segmenter(
                [im for _, im in decoded], job.classes, **kwargs
            )
        except ZerosegError:
            results = []
            for item, image in decoded:
                try:
                    results += segmenter([image], job.classes, **kwargs)
                except ZerosegError as exc:
                    rows[item.id] = failed_row(item, str(exc))
                    results.append(None)
        for (item, image), result in zip(decoded, results, strict=True):
            if result is not None:
                rows[item.id] = write_outputs(item, image.size, result, job)
    return [rows[item.id] for item in items]


def complete_row(item: Item, job: Job, names: list[str]) -> dict | None:
    """The index row of an item whose outputs are complete for this run, else None (redo it)."""
    labels_path, json_path = output_paths(item, job.out)
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
        if labels_path.stat().st_size == 0:
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("image") != item.source or info.get("class_names") != names:
        return None
    return ok_row(item, info.get("size"), info.get("fractions"))
