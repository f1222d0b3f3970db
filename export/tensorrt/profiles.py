"""TensorRT optimisation profiles from `--min-shape / --opt-shape / --max-shape B,H,W`, and their checks.

The image encoder has one dynamic input, `pixels` (B, 3, H, W), so an engine gets one profile: each
shape flag is `B,H,W` (the 3 channels are implied). Defaults come from the bundle's manifest: min
`1 x S x S`, opt `1 x S x 4S/3`, max `8 x 2S x 2S` (capped at the bundle's max side), with S its
short side. Every side must be a multiple of the patch, min <= opt <= max in each dimension, and the
patch grid at the min shape at least the model's position-embedding grid: TensorRT has no
antialiased resize, and without it a down-sampled position embedding differs from PyTorch
(`zeroseg.export.tensorrt.precision`). Plain Python: the runtime checks inputs against the stored profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zeroseg.errors import ZerosegError

Shape = tuple[int, int, int]  # batch, height, width
DEFAULT_MAX_BATCH = 8
MAX_BATCH = 4096
INPUT = "pixels"
_KINDS = ("min", "opt", "max")


def parse_shape(flag: str, text: str) -> Shape:
    """Parse a `B,H,W` shape flag.

    Args:
        flag: the flag's name, for the error message.
        text: e.g. "1,256,256" (also "1x256x256").

    Returns:
        (batch, height, width).
    """
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ZerosegError(f"{flag} must be B,H,W (e.g. 1,256,256), got {text!r}") from None
    if len(values) != 3:
        raise ZerosegError(f"{flag} must be B,H,W (three integers, e.g. 1,256,256), got {text!r}")
    if min(values) <= 0:
        raise ZerosegError(f"{flag} must hold positive integers, got {text!r}")
    return values  # type: ignore[return-value]


def _round_up(value: float, patch: int) -> int:
    return max(patch, -(-int(round(value)) // patch) * patch)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of input `name`: min / opt / max as (B, H, W)."""

    min: Shape
    opt: Shape
    max: Shape
    name: str = INPUT

    def dims(self, which: str) -> tuple[int, int, int, int]:
        """The (B, 3, H, W) dims of "min", "opt" or "max" (what `profile.set_shape` takes)."""
        b, h, w = getattr(self, which)
        return (b, 3, h, w)

    def to_dict(self) -> dict:
        """JSON form for engine.json."""
        return {"input": self.name, **{k: list(self.dims(k)) for k in ("min", "opt", "max")}}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        """Inverse of `to_dict`."""
        try:
            shapes = {k: tuple(int(v) for i, v in enumerate(data[k]) if i != 1) for k in _KINDS}
            return cls(shapes["min"], shapes["opt"], shapes["max"], str(data["input"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise ZerosegError("engine.json has an unreadable profile; rebuild the engine") from None

    def trtexec_shapes(self) -> list[str]:
        """`--minShapes=pixels:1x3x256x256`-style arguments."""
        return [
            f"--{k}Shapes={self.name}:{'x'.join(str(d) for d in self.dims(k))}" for k in ("min", "opt", "max")
        ]

    def covers(self, shape: tuple[int, ...]) -> bool:
        """Whether a (B, 3, H, W) input lies inside the profile."""
        b, _, h, w = shape
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (b, h, w), self.max, strict=True))


def default_shapes(short_side: int, max_side: int, patch: int) -> tuple[Shape, Shape, Shape]:
    """The default (min, opt, max) of a bundle with this short side, max side and patch."""
    big = min(max_side // patch * patch, 2 * short_side)
    side = min(short_side, big)
    wide = min(_round_up(side * 4 / 3, patch), big)
    return (1, side, side), (1, side, wide), (DEFAULT_MAX_BATCH, big, big)


def derive_profile(
    *,
    patch: int,
    native_grid: int,
    short_side: int,
    max_side: int,
    min_shape: Shape | None = None,
    opt_shape: Shape | None = None,
    max_shape: Shape | None = None,
    pos_embed_error: Callable[[int, int], float] | None = None,
) -> Profile:
    """The profile of the shape flags (defaults from the manifest), validated.

    Args:
        patch: the model's patch size.
        native_grid: side of the position-embedding grid (image_size / patch).
        short_side: the bundle's input short side.
        max_side: the largest side the bundle's graph accepts.
        min_shape: --min-shape (B, H, W) or None for the default; opt_shape, max_shape likewise.
        pos_embed_error: optional (H, W) -> max abs error of the pos-embed resize without
            antialias, quoted when the min shape is below the native grid.

    Returns:
        The validated `Profile`.
    """
    defaults = default_shapes(short_side, max_side, patch)
    given = (min_shape, opt_shape, max_shape)
    shapes = [d if g is None else tuple(g) for g, d in zip(given, defaults, strict=True)]
    flags = ("--min-shape", "--opt-shape", "--max-shape")
    for flag, shape in zip(flags, shapes, strict=True):
        b, h, w = shape
        if min(shape) <= 0:
            raise ZerosegError(f"{flag} must hold positive integers, got {b},{h},{w}")
        if h % patch or w % patch:
            raise ZerosegError(f"{flag} {b},{h},{w}: H and W must be multiples of the patch size {patch}")
        if max(h, w) > max_side:
            raise ZerosegError(
                f"{flag} {b},{h},{w} exceeds the bundle's max side {max_side} (export --max-side)"
            )
        if b > MAX_BATCH:
            raise ZerosegError(f"{flag} batch {b} exceeds {MAX_BATCH}")
    pairs = ((("min", shapes[0]), ("opt", shapes[1])), (("opt", shapes[1]), ("max", shapes[2])))
    for (lo_flag, lo), (hi_flag, hi) in pairs:
        for axis, a, b in zip("BHW", lo, hi, strict=True):
            if a > b:
                raise ZerosegError(
                    f"shape flags out of order: --{lo_flag}-shape {axis}={a} > --{hi_flag}-shape {axis}={b} "
                    "(need min <= opt <= max in B, H and W)"
                )
    _, h, w = shapes[0]
    if h // patch < native_grid or w // patch < native_grid:
        native = native_grid * patch
        error = "" if pos_embed_error is None else f" (max error {pos_embed_error(h, w):.3g} at {h}x{w})"
        raise ZerosegError(
            f"--min-shape {h}x{w} is a {h // patch}x{w // patch} patch grid, below the model's {native_grid}x"
            f"{native_grid} position-embedding grid: TensorRT has no antialiased resize, so the engine would "
            f"differ from PyTorch there{error}; use H and W >= {native}"
        )
    return Profile(*shapes)  # type: ignore[arg-type]


def check_input(profile: Profile, shape: tuple[int, ...]) -> None:
    """Refuse, in one line, a (B, 3, H, W) input outside the engine's profile.

    Args:
        profile: the engine's profile (from engine.json).
        shape: the input's shape.
    """
    if len(shape) != 4 or shape[1] != 3:
        raise ZerosegError(f"the engine takes (B, 3, H, W) pixels, got {tuple(shape)}")
    if not profile.covers(shape):
        b, _, h, w = shape
        lo, hi = profile.min, profile.max
        raise ZerosegError(
            f"input {b}x3x{h}x{w} is outside the engine's profile (min {lo[0]}x3x{lo[1]}x{lo[2]}, max "
            f"{hi[0]}x3x{hi[1]}x{hi[2]}); rebuild with wider --min-shape/--max-shape or pass short_side="
        )
