"""Label maps as files and pictures: palette / 16-bit label PNGs, coloured overlays with a legend.

Used by `zeroseg segment` (outputs), `zeroseg synth` (ground-truth masks) and evaluation reports.
Label PNGs follow PASCAL VOC: a palette ("P") PNG whose pixel *indices* are the class ids, with the
standard VOC colours, so 255 (ignore) shows as VOC's cream border colour. More than 256 classes need
a 16-bit grey PNG instead ("I;16"), whose values are the class ids.

Predicted label maps (`zeroseg segment`) pass `num_labels`, which fixes the format for the whole run
from the label space, not from the labels one image happens to hold: up to 255 labels (background +
254 classes) -> 8-bit palette PNG, more -> 16-bit PNG. 255 never means a class in either: in 16-bit
files class ids of 255 and above are stored as id + 1 (`LABEL_PNG_VALUES`), so VOC tools read them
as classes, not as ignore.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_path, atomic_write_bytes


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC palette for `n` labels: uint8 (n, 3).

    Label i's bits are spread over the channels' high bits (bit 0 -> red, 1 -> green, 2 -> blue, then
    the next bit of each one step lower), so 0 is black, 1 dark red, 2 dark green and 255 is VOC's
    border colour (224, 224, 192).
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    labels = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (labels >> (3 * shift + channel)) & 1
            out[:, channel] |= bit << (7 - shift)
    return out.astype(np.uint8)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ZerosegError(f"a label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.size == 0:
        raise ZerosegError(f"label map is empty (shape {labels.shape})")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ZerosegError(f"a label map must hold integers, got dtype {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 65535:
        raise ZerosegError(f"labels must lie in 0..65535 to be saved as PNG, got {lo}..{hi}")
    return labels


def _full_palette(palette: np.ndarray | Sequence | None, n: int = 256) -> np.ndarray:
    """An `n`-entry palette: `palette`'s entries first, the VOC palette for the rest."""
    full = voc_palette(n)
    if palette is not None:
        pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)[:n]
        full[: len(pal)] = np.clip(pal, 0, 255).astype(np.uint8)
    return full


#: How `zeroseg segment` stores class ids in its label PNGs (also written into each image's JSON).
LABEL_PNG_VALUES = "value = class id (0 = background); in 16-bit files ids >= 255 are stored as id + 1"
#: The most labels (background included) an 8-bit label PNG holds without using 255 (VOC's ignore).
MAX_8BIT_LABELS = 255


def label_ids_from_png(values: np.ndarray) -> np.ndarray:
    """Class ids of a predicted label PNG's pixel values (inverse of the 16-bit id + 1 storage;
    8-bit files hold the ids as they are). 255 (never a predicted class) stays 255."""
    values = np.asarray(values).astype(np.int64)
    return values - (values > 255)


def label_png_bits(num_labels: int) -> int:
    """8 or 16: the label PNG depth for a label space of `num_labels` labels (background included)."""
    return 8 if num_labels <= MAX_8BIT_LABELS else 16


def label_image(
    labels: np.ndarray, palette: np.ndarray | Sequence | None = None, *, num_labels: int | None = None
) -> Image.Image:
    """A PIL image of a label map.

    Args:
        labels: (H, W) integer class ids.
        palette: colours of the 8-bit palette (default VOC).
        num_labels: the size of the label space (predictions): fixes the format for every image of
            a run and keeps 255 free (module docstring). None (masks with 255 = ignore): "P" mode if
            every label < 256, otherwise 16-bit grey ("I;16") holding the values as they are.
    """
    labels = _check_labels(labels)
    if num_labels is not None:
        if int(labels.max()) >= num_labels:
            raise ZerosegError(f"label {int(labels.max())} is outside the {num_labels} labels of the run")
        if label_png_bits(num_labels) == 16:
            stored = labels.astype(np.int64)
            stored = stored + (stored >= 255)
            if int(stored.max()) > 65535:
                raise ZerosegError(f"{num_labels} labels do not fit a 16-bit label PNG")
            return Image.fromarray(stored.astype(np.uint16))
    if int(labels.max()) < 256:
        h, w = labels.shape
        img = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
        img.putpalette(_full_palette(palette).reshape(-1).tolist())
        return img
    return Image.fromarray(labels.astype(np.uint16))


def encode_label_png(
    labels: np.ndarray, palette: np.ndarray | Sequence | None = None, *, num_labels: int | None = None
) -> bytes:
    """The bytes of `save_label_png`'s file."""
    buf = io.BytesIO()
    label_image(labels, palette, num_labels=num_labels).save(buf, format="PNG")
    return buf.getvalue()


def save_label_png(
    path: str | os.PathLike,
    labels: np.ndarray,
    palette: np.ndarray | Sequence | None = None,
    *,
    num_labels: int | None = None,
) -> None:
    """Write a label map atomically as a palette PNG or a 16-bit grey PNG (see `label_image`)."""
    atomic_write_bytes(path, encode_label_png(labels, palette, num_labels=num_labels))


def label_fractions(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Fraction of all pixels per label present, largest first: {name: fraction}.

    Labels outside the class list are named "ignore" (255) or "class <i>".
    """
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    total = float(labels.size) or 1.0
    out: dict[str, float] = {}
    for value, count in sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda t: -t[1]):
        name = _name(int(value), class_names)
        out[name] = out.get(name, 0.0) + count / total
    return out


def _name(value: int, class_names: Sequence[str]) -> str:
    if 0 <= value < len(class_names):
        return str(class_names[value])
    return "ignore" if value == 255 else f"class {value}"


def scaled_font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font, scaled to the image when this Pillow can (no font files needed)."""
    size = int(min(18, max(8, height // 28)))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def overlay(
    image: Image.Image,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | Sequence | None = None,
    alpha: float = 0.5,
    *,
    legend: bool = True,
    ignore_index: int = 255,
) -> Image.Image:
    """The image with each label's colour blended in (`alpha`), same size as the image.

    Pixels labelled `ignore_index` keep the image. A legend in the top-left corner lists the labels
    present, largest first: a colour swatch, the class name and its share of the pixels.
    """
    image = image.convert("RGB")
    labels = np.asarray(labels)
    if labels.shape != (image.height, image.width):
        raise ZerosegError(
            f"label map shape {labels.shape} does not match the image ({image.height}, {image.width})"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ZerosegError(f"overlay alpha must be in [0, 1], got {alpha}")
    labels = labels.astype(np.int64)
    n = max(len(class_names), int(labels.max(initial=0)) + 1, 256)
    colours = _full_palette(palette, n)
    rgb = np.asarray(image, dtype=np.float32)
    shown = (labels >= 0) & (labels != ignore_index)
    colour_map = colours[np.clip(labels, 0, n - 1)].astype(np.float32)
    blended = np.where(shown[:, :, None], (1.0 - alpha) * rgb + alpha * colour_map, rgb)
    out = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")
    if legend:
        _draw_legend(out, labels, class_names, colours, ignore_index)
    return out


def _draw_legend(
    img: Image.Image, labels: np.ndarray, class_names: Sequence[str], colours: np.ndarray, ignore: int
) -> None:
    values, counts = np.unique(labels, return_counts=True)
    keep = values != ignore
    values, counts = values[keep], counts[keep]
    if values.size == 0:
        return
    order = np.argsort(-counts, kind="stable")
    font = scaled_font(img.height)
    draw = ImageDraw.Draw(img, "RGBA")
    line_h = int(draw.textbbox((0, 0), "Ag%", font=font)[3]) + 3
    rows = []
    for i in order:
        value = int(values[i])
        text = f"{_name(value, class_names)} {100.0 * counts[i] / labels.size:.1f}%"
        rows.append((tuple(int(c) for c in colours[min(value, len(colours) - 1)]), text))
    rows = rows[: max(1, (img.height - 4) // line_h)]
    swatch = line_h - 4
    width = max(int(draw.textlength(t, font=font)) for _, t in rows) + swatch + 10
    draw.rectangle(
        (0, 0, min(width, img.width - 1), min(len(rows) * line_h + 3, img.height - 1)), fill=(0, 0, 0, 150)
    )
    for k, (colour, text) in enumerate(rows):
        y = 2 + k * line_h
        draw.rectangle(
            (3, y + 1, 3 + swatch, y + 1 + swatch), fill=colour + (255,), outline=(255, 255, 255, 255)
        )
        draw.text((swatch + 7, y), text, fill=(255, 255, 255, 255), font=font)


def save_overlay(
    path: str | os.PathLike,
    image: Image.Image,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray | Sequence | None = None,
    alpha: float = 0.5,
    *,
    ignore_index: int = 255,
) -> None:
    """Write `overlay(...)` atomically; the format follows the suffix (.png, .jpg, ...).

    Predictions pass `ignore_index=-1`: they hold no ignore label, so a class with id 255 is coloured
    and listed like any other.
    """
    path = Path(path)
    if Image.registered_extensions().get(path.suffix.lower()) is None:
        raise ZerosegError(f"unknown image format for {path}; use a .png or .jpg file name")
    out = overlay(image, labels, class_names, palette, alpha, ignore_index=ignore_index)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            out.save(tmp, quality=95)
        else:
            out.save(tmp)
