"""ShapeWorld: the project's own small world of coloured shapes, with captions and exact masks.

Two kinds of data, both seeded and deterministic:

- **captions**: single-object images (default 64x64) with a caption such as "a photo of a red
  circle.", to train a tiny CLIP; ~5% are empty backgrounds captioned as "background". In memory with
  `generate_caption_batch`, on disk with `write_captions` (`images/*.png` + `captions.jsonl`).
- **scenes**: 2-5 objects on a textured background (default 128x128) with colour / shape / colour+
  shape label masks, for measuring segmentation mIoU. In memory with `generate_scene`, on disk with
  `write_scenes` in the PASCAL VOC layout (see `write_scenes`).

Item i of a data set is drawn from its own generator, PCG64 seeded from (seed, kind, i), so an item
never depends on how many items are made or in which chunks. The in-memory generators live in
`zeroseg.data.scenes` (drawing with `zeroseg.data.shapes`) and are re-exported here; this module
writes data sets to disk.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from zeroseg.data.scenes import (
    BACKGROUND_CAPTIONS,
    CAPTION_TEMPLATES,
    IGNORE_INDEX,
    LABEL_SETS,
    Scene,
    class_names,
    generate_caption_batch,
    generate_caption_item,
    generate_scene,
    ignore_band,
    item_rng,
    label_mask,
)
from zeroseg.data.shapes import COLOURS, SHAPES, check_size
from zeroseg.errors import ZerosegError
from zeroseg.infer.visualize import encode_label_png
from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json

__all__ = [
    "COLOURS",
    "SHAPES",
    "LABEL_SETS",
    "CAPTION_TEMPLATES",
    "BACKGROUND_CAPTIONS",
    "Scene",
    "item_rng",
    "class_names",
    "generate_caption_item",
    "generate_caption_batch",
    "generate_scene",
    "ignore_band",
    "label_mask",
    "is_val",
    "write_captions",
    "write_scenes",
    "relabel_scenes",
]

JPEG_QUALITY = 95
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- writing data sets


def is_val(index: int, val_fraction: float) -> bool:
    """Whether item `index` is in the validation split: spread evenly, floor(n * f) of the first n."""
    return int((index + 1) * val_fraction) > int(index * val_fraction)


def _check_args(n: int, seed: int, val_fraction: float) -> None:
    if n < 1:
        raise ZerosegError(f"--n must be >= 1, got {n}")
    if seed < 0:
        raise ZerosegError(f"--seed must be >= 0, got {seed}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ZerosegError(f"--val-fraction must be in [0, 1], got {val_fraction}")


def _item_id(index: int, n: int) -> str:
    return f"{index:0{max(6, len(str(n - 1)))}d}"


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":  # 4:4:4 chroma: colour is the label, so keep colour edges sharp
        Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode())


def _meta(kind: str, n: int, seed: int, size: int, val_fraction: float, **extra) -> dict:
    return {
        "generator": "zeroseg.shapeworld.write",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "n": n,
        "seed": seed,
        "size": size,
        "val_fraction": val_fraction,
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        **extra,
    }


Progress = Callable[[int], None]


def write_captions(
    out: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    size: int = 64,
    val_fraction: float = 0.2,
    progress: Progress | None = None,
) -> dict:
    """Write `n` captioned images: `images/<id>.png` and `captions.jsonl`, plus `dataset.json`.

    Each captions.jsonl line: {"file", "caption", "colour", "shape", "split"} (colour and shape are
    null for an empty background).

    Args:
        out: the folder to write into (created).
        n: number of images.
        seed: data set seed; item i depends only on (seed, i).
        size: image side in pixels (16 to 4096).
        val_fraction: fraction of the items in the val split, in [0, 1].
        progress: called with 1 after each image.

    Returns:
        The dataset.json dict (generator settings and split sizes).

    Raises:
        ZerosegError: n < 1, a negative seed, val_fraction outside [0, 1], or a bad size.
    """
    _check_args(n, seed, val_fraction)
    check_size(size, 16)
    out = Path(out)
    lines = []
    splits = {"train": 0, "val": 0}
    for i in range(n):
        image, caption, colour_id, shape_id = generate_caption_item(seed, size, index=i)
        rel = f"images/{_item_id(i, n)}.png"
        atomic_write_bytes(out / rel, _encode(image, "PNG"))
        split = "val" if is_val(i, val_fraction) else "train"
        splits[split] += 1
        record = {
            "file": rel,
            "caption": caption,
            "colour": COLOURS[colour_id] if colour_id >= 0 else None,
            "shape": SHAPES[shape_id] if shape_id >= 0 else None,
            "split": split,
        }
        lines.append(json.dumps(record))
        if progress is not None:
            progress(1)
    _write_lines(out / "captions.jsonl", lines)
    meta = _meta("captions", n, seed, size, val_fraction, num_train=splits["train"], num_val=splits["val"])
    atomic_write_json(out / "dataset.json", meta)
    return meta


def _write_class_files(out: Path, labels: str) -> None:
    _write_lines(out / "classes.txt", class_names(labels))
    for name in LABEL_SETS:
        _write_lines(out / f"classes_{name}.txt", class_names(name))


def write_scenes(
    out: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    size: int = 128,
    val_fraction: float = 0.2,
    labels: str = "colour",
    progress: Progress | None = None,
) -> dict:
    """Write `n` scenes in the PASCAL VOC layout under `out`.

    Layout written:

    - `JPEGImages/<id>.jpg` (quality 95, no chroma subsampling);
    - `SegmentationClass/<id>.png`: VOC palette PNG of the `labels` set, 255 on the border band;
    - `SegmentationObject/<id>.png`: instance ids in painting order (1..k), same band;
    - `ImageSets/Segmentation/{train,val,trainval}.txt`;
    - `classes.txt` (names of the `labels` set) and `classes_{colour,shape,both}.txt`;
    - `annotations.jsonl`: per image its id, split and objects (instance -> colour, shape, pose,
      visible pixels), from which `relabel_scenes` derives any label set;
    - `dataset.json`: the generator settings.

    Args:
        out: the folder to write into (created).
        n: number of scenes.
        seed: data set seed; item i depends only on (seed, i).
        size: image side in pixels (32 to 4096).
        val_fraction: fraction of the items in the val split, in [0, 1].
        labels: the label set of `SegmentationClass/`: "colour", "shape" or "both".
        progress: called with 1 after each scene.

    Returns:
        The dataset.json dict (generator settings and split sizes).

    Raises:
        ZerosegError: n < 1, a negative seed, val_fraction outside [0, 1], an unknown label set,
            or a bad size.
    """
    _check_args(n, seed, val_fraction)
    class_names(labels)
    check_size(size, 32)
    out = Path(out)
    ids: dict[str, list[str]] = {"train": [], "val": []}
    annotations = []
    for i in range(n):
        scene = generate_scene(seed, size, index=i)
        item = _item_id(i, n)
        split = "val" if is_val(i, val_fraction) else "train"
        ids[split].append(item)
        atomic_write_bytes(out / "JPEGImages" / f"{item}.jpg", _encode(scene.image, "JPEG"))
        mask = scene.label_mask(labels)
        atomic_write_bytes(out / "SegmentationClass" / f"{item}.png", encode_label_png(mask))
        obj_mask = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, scene.instances)  # same ignore band
        atomic_write_bytes(out / "SegmentationObject" / f"{item}.png", encode_label_png(obj_mask))
        annotations.append(json.dumps({"id": item, "split": split, "objects": scene.objects}))
        if progress is not None:
            progress(1)
    sets = out / "ImageSets" / "Segmentation"
    _write_lines(sets / "train.txt", ids["train"])
    _write_lines(sets / "val.txt", ids["val"])
    _write_lines(sets / "trainval.txt", sorted(ids["train"] + ids["val"]))
    _write_lines(out / "annotations.jsonl", annotations)
    _write_class_files(out, labels)
    meta = _meta(
        "scenes",
        n,
        seed,
        size,
        val_fraction,
        labels=labels,
        num_train=len(ids["train"]),
        num_val=len(ids["val"]),
    )
    atomic_write_json(out / "dataset.json", meta)
    return meta


def relabel_scenes(root: str | os.PathLike, labels: str) -> int:
    """Rewrite `SegmentationClass/` and `classes.txt` of a written scenes data set for `labels`.

    Uses `SegmentationObject/` and `annotations.jsonl`; returns the number of masks written.
    """
    class_names(labels)
    root = Path(root)
    ann_path = root / "annotations.jsonl"
    if not ann_path.is_file():
        raise ZerosegError(
            f"no annotations.jsonl in {root}; is it a folder written by `zeroseg synth --kind scenes`?"
        )
    count = 0
    for line in ann_path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        obj_path = root / "SegmentationObject" / f"{record['id']}.png"
        if not obj_path.is_file():
            raise ZerosegError(f"instance mask missing: {obj_path}; regenerate the data set")
        with Image.open(obj_path) as img:
            instances = np.asarray(img)
        mask = label_mask(instances, record["objects"], labels, band=instances == IGNORE_INDEX)
        atomic_write_bytes(root / "SegmentationClass" / f"{record['id']}.png", encode_label_png(mask))
        count += 1
    _write_class_files(root, labels)
    meta_path = root / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["labels"] = labels
        atomic_write_json(meta_path, meta)
    return count
