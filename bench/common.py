"""Small pieces the benchmark commands share: argument checks, devices, tables and JSON results."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.utils.atomic import atomic_write_json

#: Where results go when --json is not given (relative to the working directory).
RESULTS_DIR = Path("bench-results")
SCHEMA_VERSION = 1


def check_positive(value: int, option: str) -> int:
    """`value` if it is a positive integer, else a one-line error naming the option."""
    if int(value) <= 0:
        raise ZerosegError(f"{option} must be a positive integer, got {value}")
    return int(value)


def check_non_negative(value: int, option: str) -> int:
    """`value` if it is >= 0, else a one-line error naming the option."""
    if int(value) < 0:
        raise ZerosegError(f"{option} must be zero or positive, got {value}")
    return int(value)


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (0 keeps torch's default)."""
    check_non_negative(threads, "--threads")
    if threads:
        torch.set_num_threads(threads)


def parse_size(text: str, option: str) -> tuple[int, int]:
    """'640x480' (width x height) or '512' (square) -> (height, width)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ZerosegError(f"{option} must be WIDTHxHEIGHT or SIDE (e.g. 640x480), got {text!r}") from None
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise ZerosegError(f"{option} must be WIDTHxHEIGHT or SIDE with positive sides, got {text!r}")
    width, height = (values[0], values[0]) if len(values) == 1 else values
    return height, width


def check_image_budget(size_hw: tuple[int, int], count: int, option: str = "--image-size") -> None:
    """Refuse, before anything is allocated, `count` generated images of (height, width) `size_hw`
    that exceed the pixel cap of an image or cannot fit in the memory available.

    The cap is `zeroseg.data.images.MAX_PIXELS` (what `zeroseg segment` decodes); the memory estimate
    is `zeroseg segment`'s (`zeroseg.infer.files.check_memory`) for the `count` images of a batch.

    Raises:
        ZerosegError: one line naming `option`.
    """
    from zeroseg.data.images import MAX_PIXELS
    from zeroseg.infer.files import check_memory

    height, width = size_hw
    if height * width > MAX_PIXELS:
        raise ZerosegError(
            f"{option} {width}x{height} is {height * width:,} pixels, more than the {MAX_PIXELS:,} an image "
            "may have; pick a smaller size"
        )
    fix = "lower the batch sizes" if count > 1 else ""
    check_memory(option, height, width, height * width * count, fix=fix)


def scene_images(count: int, size_hw: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    """`count` ShapeWorld scenes as RGB PIL images of (height, width) `size_hw`.

    A scene is drawn square at the longer side (32..4096 px) and centre-cropped, so shapes stay round.
    Sizes that cannot fit are refused first (`check_image_budget`).
    """
    from zeroseg.shapeworld.write import generate_scene

    check_image_budget(size_hw, count)

    height, width = size_hw
    side = min(4096, max(32, height, width))
    images = []
    for i in range(count):
        img = Image.fromarray(generate_scene(seed, side, index=i).image)
        if side >= height and side >= width:
            left, top = (side - width) // 2, (side - height) // 2
            img = img.crop((left, top, left + width, top + height))
        else:
            img = img.resize((width, height), Image.BICUBIC)
        images.append(img.convert("RGB"))
    return images


def json_path(path: Path | None, default_name: str) -> Path:
    """The result file: --json, else bench-results/<default_name>."""
    return Path(path) if path is not None else RESULTS_DIR / default_name


def write_result(path: Path, result: dict[str, Any]) -> Path:
    """Write a result atomically as JSON (NaN/inf are refused: they would not be valid JSON)."""
    _check_finite(result, "result")
    atomic_write_json(path, result)
    return path


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite number at {where}: {obj}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def file_info(path: Path) -> dict[str, Any]:
    """Path, size and sha256 of an input file (which checkpoint gave the numbers)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": os.fspath(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats with `digits` significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (first column left-aligned, the others right-aligned)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])
