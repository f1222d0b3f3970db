"""ShapeWorld items in memory: label sets, captioned single-object images and multi-object scenes.

Items are drawn with the primitives of `zeroseg.data.shapes` (shapes, colours, backgrounds, noise),
in a fixed order from a `numpy.random.Generator`, so the same generator state always gives the same
pixels; `item_rng(seed, index, kind)` gives item `index` of a data set its own PCG64 stream, so an
item never depends on how many items are made or in which chunks. The public API is re-exported by
`zeroseg.shapeworld.write`, which also writes data sets to disk.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from zeroseg.data.shapes import COLOURS, SHAPES, background, check_size, finish, paint_object, random_pose
from zeroseg.errors import ZerosegError

# ----------------------------------------------------------------------------- label sets and items

#: Label sets of the scene masks.
LABEL_SETS: tuple[str, ...] = ("colour", "shape", "both")

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape}.",
    "a {colour} {shape}.",
    "a picture of a {colour} {shape}",
    "an image of a {colour} {shape}.",
    "a {colour} {shape} on a grey background.",
    "a drawing of a {colour} {shape}.",
    "a {shape} that is {colour}.",
    "a photo of the {colour} {shape}.",
)

BACKGROUND_CAPTIONS: tuple[str, ...] = (
    "a photo of the background.",
    "background.",
    "a picture of an empty background",
    "an image of a plain grey background.",
    "an empty background.",
    "a photo of a textured background.",
)

IGNORE_INDEX = 255
EMPTY_FRACTION = 0.05
CAPTION_RADIUS = (0.28, 0.44)  # x size
SCENE_RADIUS = (13.0 / 128.0, 26.0 / 128.0)  # x size
SCENE_OBJECTS = (2, 5)  # inclusive
SCENE_MIN_GAP = 0.7  # placement tries to keep centres >= 0.7 (r_i + r_j) apart ...
SCENE_PLACEMENT_TRIES = 12  # ... and accepts an overlap after this many tries

_STREAM = {"captions": 0, "scenes": 1}


def item_rng(seed: int, index: int, kind: str = "scenes") -> np.random.Generator:
    """The generator of item `index` of a `kind` data set made with `seed` (PCG64)."""
    if seed < 0 or index < 0:
        raise ZerosegError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    seq = np.random.SeedSequence(entropy=int(seed), spawn_key=(_STREAM[kind], int(index)))
    return np.random.Generator(np.random.PCG64(seq))


def _as_rng(rng_or_seed: np.random.Generator | int, index: int, kind: str) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return item_rng(int(rng_or_seed), index, kind)


def class_names(labels: str = "colour") -> list[str]:
    """Class names of a label set, background first: colour -> 7, shape -> 9, both -> 49."""
    if labels == "colour":
        return ["background", *COLOURS]
    if labels == "shape":
        return ["background", *SHAPES]
    if labels == "both":
        return ["background", *(f"{c} {s}" for c in COLOURS for s in SHAPES)]
    raise ZerosegError(f"unknown label set {labels!r}; choose one of {', '.join(LABEL_SETS)}")


def _label_of(labels: str, colour_id: int, shape_id: int) -> int:
    if labels == "colour":
        return colour_id + 1
    if labels == "shape":
        return shape_id + 1
    return 1 + colour_id * len(SHAPES) + shape_id


# ----------------------------------------------------------------------------- single images


def generate_caption_item(
    rng_or_seed: np.random.Generator | int,
    size: int = 64,
    *,
    index: int = 0,
    empty_fraction: float = EMPTY_FRACTION,
) -> tuple[np.ndarray, str, int, int]:
    """One captioned single-object image: (uint8 (size, size, 3), caption, colour_id, shape_id).

    An int seed means item `index` of that seed's captions data set. Empty backgrounds (probability
    `empty_fraction`) have colour_id = shape_id = -1 and a background caption.
    """
    check_size(size, 16)
    rng = _as_rng(rng_or_seed, index, "captions")
    canvas = background(rng, size)
    if rng.random() < empty_fraction:
        caption = BACKGROUND_CAPTIONS[int(rng.integers(len(BACKGROUND_CAPTIONS)))]
        return finish(rng, canvas), caption, -1, -1
    colour_id = int(rng.integers(len(COLOURS)))
    shape_id = int(rng.integers(len(SHAPES)))
    radius = rng.uniform(*CAPTION_RADIUS) * size
    margin = 0.85 * radius
    cx, cy = rng.uniform(margin, size - margin, size=2)
    paint_object(canvas, rng, SHAPES[shape_id], colour_id, cx, cy, radius, random_pose(rng))
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    caption = template.format(colour=COLOURS[colour_id], shape=SHAPES[shape_id])
    return finish(rng, canvas), caption, colour_id, shape_id


def generate_caption_batch(
    rng_or_seed: np.random.Generator | int,
    n: int,
    size: int = 64,
    *,
    start: int = 0,
    empty_fraction: float = EMPTY_FRACTION,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """`n` captioned images: (uint8 (n, size, size, 3), captions, colour_ids, shape_ids).

    With an int seed, the items are `start .. start+n-1` of that seed's data set (the same pixels as
    `write_captions` writes). With a Generator, each item gets a child generator spawned from it, so
    successive calls give fresh batches. Ids are int64 arrays, -1 for empty backgrounds.
    """
    if n < 0:
        raise ZerosegError(f"batch size must be >= 0, got {n}")
    if isinstance(rng_or_seed, np.random.Generator):
        rngs = rng_or_seed.spawn(n)
    else:
        rngs = [item_rng(int(rng_or_seed), start + i, "captions") for i in range(n)]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    colour_ids = np.empty(n, dtype=np.int64)
    shape_ids = np.empty(n, dtype=np.int64)
    for i, rng in enumerate(rngs):
        images[i], caption, colour_ids[i], shape_ids[i] = generate_caption_item(
            rng, size, empty_fraction=empty_fraction
        )
        captions.append(caption)
    return images, captions, colour_ids, shape_ids


# ----------------------------------------------------------------------------- scenes


class Scene(NamedTuple):
    """A generated scene. Masks are uint8 (S, S) with 255 on each object's 1-px border band."""

    image: np.ndarray  # uint8 (S, S, 3)
    colour_mask: np.ndarray  # 0 background, 1..6 colours
    shape_mask: np.ndarray  # 0 background, 1..8 shapes
    instances: np.ndarray  # uint8 (S, S): 0 background, k = k-th painted object (no ignore band)
    objects: list[dict]  # per instance: colour, shape, ids, centre, radius, angle, visible pixels

    def label_mask(self, labels: str = "colour") -> np.ndarray:
        """The mask of a label set ("colour", "shape" or "both"), with the ignore band."""
        class_names(labels)  # validates the name
        return label_mask(self.instances, self.objects, labels)


def label_mask(
    instances: np.ndarray, objects: list[dict], labels: str, band: np.ndarray | None = None
) -> np.ndarray:
    """Class ids of `labels` per pixel from an instance map (instance k -> objects with "instance": k).

    Pixels with instance 255 stay 255; the border band (`ignore_band(instances)` by default) is 255.
    """
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for obj in objects:
        lut[obj["instance"]] = _label_of(labels, obj["colour_id"], obj["shape_id"])
    out = lut[instances]
    out[ignore_band(instances) if band is None else band] = IGNORE_INDEX
    return out


def ignore_band(instances: np.ndarray) -> np.ndarray:
    """Bool mask of the 1-px border band: object pixels with a 4-neighbour of another instance.

    This is the object's outermost ring of pixels (against the background or another object), where
    anti-aliasing mixes colours; VOC marks its (wider) object borders the same way, as 255 = ignore.
    """
    band = np.zeros(instances.shape, dtype=bool)
    v = instances[1:] != instances[:-1]
    band[1:] |= v
    band[:-1] |= v
    h = instances[:, 1:] != instances[:, :-1]
    band[:, 1:] |= h
    band[:, :-1] |= h
    return band & (instances > 0)


def generate_scene(
    rng_or_seed: np.random.Generator | int,
    size: int = 128,
    *,
    index: int = 0,
    num_objects: tuple[int, int] = SCENE_OBJECTS,
    radius: tuple[float, float] | None = None,
) -> Scene:
    """One scene of `num_objects` (inclusive range) shapes on a textured background.

    Radii are drawn from `radius` pixels (default 13..26 px scaled by size/128). Objects are painted
    in order, so later ones occlude earlier ones; placement avoids heavy overlap but allows some.
    An int seed means item `index` of that seed's scenes data set.
    """
    check_size(size, 32)
    lo_n, hi_n = num_objects
    if not 1 <= lo_n <= hi_n <= 254:
        raise ZerosegError(f"num_objects must satisfy 1 <= min <= max <= 254, got {num_objects}")
    r_lo, r_hi = radius if radius is not None else (SCENE_RADIUS[0] * size, SCENE_RADIUS[1] * size)
    rng = _as_rng(rng_or_seed, index, "scenes")
    canvas = background(rng, size)
    instances = np.zeros((size, size), dtype=np.uint8)
    objects: list[dict] = []
    placed: list[tuple[float, float, float]] = []
    for k in range(1, int(rng.integers(lo_n, hi_n + 1)) + 1):
        colour_id = int(rng.integers(len(COLOURS)))
        shape_id = int(rng.integers(len(SHAPES)))
        r = float(rng.uniform(r_lo, r_hi))
        margin = min(0.85 * r, size / 2)
        for _ in range(SCENE_PLACEMENT_TRIES):
            cx, cy = (float(v) for v in rng.uniform(margin, size - margin, size=2))
            if all((cx - x) ** 2 + (cy - y) ** 2 >= (SCENE_MIN_GAP * (r + q)) ** 2 for x, y, q in placed):
                break
        placed.append((cx, cy, r))
        angle = random_pose(rng)
        alpha, y0, x0 = paint_object(canvas, rng, SHAPES[shape_id], colour_id, cx, cy, r, angle)
        region = instances[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
        region[alpha >= 0.5] = k
        objects.append(
            {
                "instance": k,
                "colour": COLOURS[colour_id],
                "shape": SHAPES[shape_id],
                "colour_id": colour_id,
                "shape_id": shape_id,
                "center": [round(cx, 3), round(cy, 3)],
                "radius": round(r, 3),
                "angle": round(angle, 3),
            }
        )
    image = finish(rng, canvas)
    counts = np.bincount(instances.reshape(-1), minlength=len(objects) + 1)
    for obj in objects:
        obj["pixels"] = int(counts[obj["instance"]])
    band = ignore_band(instances)
    colour_mask = label_mask(instances, objects, "colour", band)
    return Scene(image, colour_mask, label_mask(instances, objects, "shape", band), instances, objects)
