"""Reading images the way users hand them to us, and turning them into model input.

Every decoder quirk is handled here once: EXIF orientation, greyscale / palette / RGBA / 16-bit
modes, empty or enormous images, files that are not images. Errors are `ZerosegError`s naming the
file and the problem.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zeroseg.errors import ZerosegError

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

#: Refuse images above this many pixels (about 16k x 16k) instead of exhausting memory.
MAX_PIXELS: int = 268_435_456


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an upright 8-bit RGB PIL image.

    EXIF orientation is applied; greyscale, palette, 16-bit and float modes become RGB, and
    transparency is composited onto white.

    Args:
        path: the image file.

    Returns:
        The decoded RGB image (fully loaded; the file is closed).

    Raises:
        ZerosegError: a missing file, a non-image, an empty (0-pixel) or an over-large image
            (more than `MAX_PIXELS`).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ZerosegError(f"{path} is a folder, not an image: pass the image files inside it")
        if path.is_symlink():
            raise ZerosegError(f"{path} is a broken or looping symbolic link: point it at an image file")
        raise ZerosegError(f"image not found: {path} (check the path)")
    return _decode(path, path)


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """Decode in-memory image bytes (e.g. a tar member) exactly like `open_rgb`; `name` is for messages."""
    return _decode(io.BytesIO(data), name)


def _decode(source, path) -> Image.Image:
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that, so the limit is checked here, from
        # the header, before any pixel is decoded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{img.width}x{img.height}")
            img = ImageOps.exif_transpose(img)
            img.load()
            if img.width == 0 or img.height == 0:
                raise ZerosegError(f"image is empty ({img.width}x{img.height}): {path}")
            return _to_rgb(img)
    except Image.DecompressionBombError:
        raise ZerosegError(
            f"image too large (> {MAX_PIXELS} pixels): {path}; downscale it before segmenting"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ZerosegError(f"not a readable image: {path} ({type(exc).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root`, recursively, sorted by relative path (a stable order).

    Args:
        root: a folder.

    Returns:
        The files whose suffix (any case) is in `IMAGE_SUFFIXES`; possibly none.

    Raises:
        ZerosegError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ZerosegError(f"data folder not found: {root} (pass a folder of images)")
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def to_unit_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3,H,W) in [0,1]."""
    import torch  # here, not at the top: decoding must work without torch (the ONNX runtime)

    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def center_crop_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic) and take the central size x size crop."""
    scale = size / min(img.width, img.height)
    new_w = max(size, round(img.width * scale))
    new_h = max(size, round(img.height * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left = (new_w - size) // 2
    top = (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))
