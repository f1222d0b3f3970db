"""ShapeWorld items in memory: shapes, colours, backgrounds, captioned images and scenes.

Everything here draws from a `numpy.random.Generator`, in a fixed order, so the same generator state
always gives the same pixels; `item_rng(seed, index, kind)` gives item `index` of a data set its own
PCG64 stream, so an item never depends on how many items are made or in which chunks. The public API
is re-exported by `zeroseg.shapeworld.write`, which also writes data sets to disk.

Pixel work is float32 on (H, W, 3) arrays in 0..255; shapes are rasterised with PIL at 4x
supersampling inside their bounding box, which gives an anti-aliased coverage map (alpha) per object.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from zeroseg.errors import ZerosegError

#: Shape names, in label order (shape id = index).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring")

#: Colour names, in label order (colour id = index).
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")

#: Base RGB of each colour before the per-object jitter.
BASE_RGB = np.array(
    [
        (220, 40, 40),  # red
        (40, 180, 60),  # green
        (45, 75, 220),  # blue
        (230, 210, 45),  # yellow
        (215, 55, 205),  # magenta
        (45, 205, 215),  # cyan
    ],
    dtype=np.float32,
)

COLOUR_JITTER = 25  # +- per channel, uniform integers
MAX_ROTATION_DEG = 20.0
STRIPE_PROBABILITY = 0.3
RING_INNER = 0.55  # inner radius of a ring, relative to the outer one
SUPERSAMPLE = 4


def _unit_polygon(shape: str) -> np.ndarray | None:
    """Vertices (k, 2) of `shape` with circumradius 1, pointing up (image y grows downwards)."""

    def around(k: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
        t = np.deg2rad(start_deg + 360.0 * np.arange(k) / k)
        return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)

    if shape == "square":
        return around(4, 1.0, -45.0)
    if shape == "triangle":
        return around(3, 1.0, -90.0)
    if shape == "hexagon":
        return around(6, 1.0, 0.0)
    if shape == "diamond":  # a rhombus with aspect 0.6
        return np.array([(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)])
    if shape == "star":
        outer, inner = around(5, 1.0), around(5, 0.45, -90.0 + 36.0)
        return np.stack([outer, inner], axis=1).reshape(10, 2)
    if shape == "cross":
        w, a = 0.32, 1.0
        return np.array(
            [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w)]
            + [(-a, -w), (-w, -w)]
        )
    return None  # circle and ring are drawn as ellipses


_UNIT_POLYGONS = {name: _unit_polygon(name) for name in SHAPES}


def shape_coverage(
    shape: str, cx: float, cy: float, radius: float, angle_deg: float, size: int
) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage of one shape: (alpha float32 (h, w) in [0, 1], y0, x0).

    The alpha array covers only the shape's bounding box clipped to the size x size image; (y0, x0) is
    its top-left corner in the image. An empty array means the shape lies outside the image.
    """
    pad = 2
    x0 = max(0, int(math.floor(cx - radius)) - pad)
    y0 = max(0, int(math.floor(cy - radius)) - pad)
    x1 = min(size, int(math.ceil(cx + radius)) + pad)
    y1 = min(size, int(math.ceil(cy + radius)) + pad)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), 0, 0
    s = SUPERSAMPLE
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    # image pixel i spans [i, i+1) in continuous coordinates; PIL puts sub-pixel k's centre at k
    ox, oy = (cx - x0) * s - 0.5, (cy - y0) * s - 0.5
    r = radius * s
    if shape in ("circle", "ring"):
        draw.ellipse((ox - r, oy - r, ox + r, oy + r), fill=255)
        if shape == "ring":
            ri = r * RING_INNER
            draw.ellipse((ox - ri, oy - ri, ox + ri, oy + ri), fill=0)
    else:
        t = math.radians(angle_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        pts = _UNIT_POLYGONS[shape] @ rot.T * r + (ox, oy)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
    alpha = np.asarray(canvas.reduce(s), dtype=np.float32) * (1.0 / 255.0)
    return alpha, y0, x0


def object_colour(rng: np.random.Generator, colour_id: int) -> np.ndarray:
    """The base RGB of `colour_id` jittered by +-COLOUR_JITTER per channel (float32 (3,))."""
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return np.clip(BASE_RGB[colour_id] + jitter, 0, 255).astype(np.float32)


def paint_object(
    canvas: np.ndarray,
    rng: np.random.Generator,
    shape: str,
    colour_id: int,
    cx: float,
    cy: float,
    radius: float,
    angle_deg: float,
) -> tuple[np.ndarray, int, int]:
    """Paint one shaded, jittered object over `canvas` (float32 (S, S, 3)) in place.

    Returns its coverage (alpha, y0, x0) as `shape_coverage` does. Shading is a linear light gradient
    across the object (brightness 1 +- up to 0.25 at its rim) in a random direction.
    """
    size = canvas.shape[0]
    rgb = object_colour(rng, colour_id)
    light = rng.uniform(0.1, 0.25)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    alpha, y0, x0 = shape_coverage(shape, cx, cy, radius, angle_deg, size)
    h, w = alpha.shape
    if h == 0:
        return alpha, y0, x0
    ys = (np.arange(y0, y0 + h, dtype=np.float32) + 0.5 - cy) / radius
    xs = (np.arange(x0, x0 + w, dtype=np.float32) + 0.5 - cx) / radius
    shade = 1.0 + light * (math.cos(theta) * xs[None, :] + math.sin(theta) * ys[:, None])
    fill = np.clip(shade[:, :, None] * rgb, 0, 255)
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    a = alpha[:, :, None]
    region *= 1.0 - a
    region += a * fill
    return alpha, y0, x0


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix that resizes a length-`src` signal to `dst` samples (align_corners=False)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] += 1.0 - frac
    m[np.arange(dst), hi] += frac
    return m


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey / low-saturation textured background, float32 (size, size, 3) in 0..255.

    Grey level 70..190 with a small per-channel tint, low-frequency noise (a 3..6 cell random grid
    upsampled bilinearly) and, 30% of the time, soft stripes at a random angle and period.
    """
    grey = rng.uniform(70.0, 190.0)
    tint = rng.uniform(-8.0, 8.0, size=3)
    cells = int(rng.integers(3, 7))
    amp = rng.uniform(6.0, 22.0)
    grid = rng.standard_normal((cells, cells)).astype(np.float32) * amp
    up = _bilinear_matrix(cells, size)
    field = up @ grid @ up.T
    if rng.random() < STRIPE_PROBABILITY:
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(6.0, 20.0) * size / 64.0
        phase = rng.uniform(0.0, 2.0 * math.pi)
        s_amp = rng.uniform(8.0, 20.0)
        coords = np.arange(size, dtype=np.float32)
        proj = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]
        field = field + s_amp * np.tanh(3.0 * np.sin(proj * (2.0 * math.pi / period) + phase))
    base = (grey + tint).astype(np.float32)
    return field[:, :, None] + base[None, None, :]


def finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Add Gaussian pixel noise (sigma 3..8) and quantise to uint8."""
    sigma = rng.uniform(3.0, 8.0)
    noise = rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(canvas + noise), 0, 255).astype(np.uint8)


def random_pose(rng: np.random.Generator) -> float:
    """A rotation angle in degrees, uniform in +-MAX_ROTATION_DEG."""
    return float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))


def _check_size(size: int, minimum: int) -> None:
    if not minimum <= size <= 4096:
        raise ZerosegError(f"image size must be between {minimum} and 4096 pixels, got {size}")


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
    _check_size(size, 16)
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
    _check_size(size, 32)
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
