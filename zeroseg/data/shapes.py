"""ShapeWorld's drawing primitives: shapes, colours, textured backgrounds, shading and pixel noise.

Everything here draws from a `numpy.random.Generator`, in a fixed order, so the same generator state
always gives the same pixels. Pixel work is float32 on (H, W, 3) arrays in 0..255; shapes are
rasterised with PIL at 4x supersampling inside their bounding box, which gives an anti-aliased
coverage map (alpha) per object. The captioned images and scenes made of them are
`zeroseg.data.scenes`.
"""

from __future__ import annotations

import math

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


def check_size(size: int, minimum: int) -> None:
    """Refuse an image side outside minimum..4096 pixels."""
    if not minimum <= size <= 4096:
        raise ZerosegError(f"image size must be between {minimum} and 4096 pixels, got {size}")
