"""The demo: generated ShapeWorld scenes segmented by the bundled ZeroSeg model, next to the truth.

`run_demo` needs no network and no data: it draws scenes with `zeroseg.data.scenes.generate_scene`,
segments them into ShapeWorld's colour classes with a ZeroSeg checkpoint (the bundled one by default)
and, when a teacher is at hand, with the training-free MaskCLIP baseline on that teacher, and writes
one picture, a row per scene (input | ground truth | ZeroSeg | MaskCLIP), plus the first scene's
overlays and a JSON of the per-scene scores. The README's picture is this command's output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from zeroseg.errors import ZerosegError
from zeroseg.evaluation.metrics import SegmentationMeter
from zeroseg.infer.visualize import overlay, scaled_font
from zeroseg.utils.atomic import atomic_path, atomic_write_json

#: Label set the bundled model is scored on (ShapeWorld's default evaluation classes).
DEMO_LABELS = "colour"
#: The most scenes (rows) one demo picture holds.
MAX_SCENES = 16
#: The panel's tiles are drawn at least this large (nearest-neighbour upscaling of small scenes).
TILE_MIN = 256


@dataclass
class DemoResult:
    """What `run_demo` wrote and measured."""

    panel: Path
    files: list[Path]
    scores: dict[str, float]


def _tile(img: Image.Image, title: str, side: int) -> Image.Image:
    """The image scaled to `side` with a title bar above it."""
    img = img.convert("RGB").resize((side, side), Image.Resampling.NEAREST)
    font = scaled_font(2 * side)
    bar = int(side * 0.09) + 6
    tile = Image.new("RGB", (side, side + bar), (255, 255, 255))
    tile.paste(img, (0, bar))
    ImageDraw.Draw(tile).text((4, 3), title, fill=(0, 0, 0), font=font)
    return tile


def panel(tiles: list[tuple[str, Image.Image]], side: int) -> Image.Image:
    """Titled tiles side by side with a small gap."""
    drawn = [_tile(img, title, side) for title, img in tiles]
    gap = 6
    out = Image.new(
        "RGB", (sum(t.width for t in drawn) + gap * (len(drawn) - 1), drawn[0].height), (255, 255, 255)
    )
    x = 0
    for t in drawn:
        out.paste(t, (x, 0))
        x += t.width + gap
    return out


def scene_miou(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one scene (mmseg semantics: ignore 255, nan-mean over classes present)."""
    meter = SegmentationMeter(num_classes)
    meter.update(pred, truth)
    return float(meter.miou())


def bundled_baseline_settings(method: str = "maskclip") -> dict:
    """The settings the ShapeWorld frontier tuned for a training-free baseline on the bundled teacher,
    at the bundled model's short side (`zeroseg.shapeworld.bundle`; {} when not recorded).

    bg_thresh and bg_prompt (call arguments) and, when recorded, short_side (a constructor argument).
    """
    from zeroseg.bundled import ASSETS, PROOF_NAME

    try:
        row = json.loads((ASSETS / PROOF_NAME).read_text())["rows"][method]
        settings = {"bg_thresh": float(row["bg_thresh"]), "bg_prompt": bool(row["bg_prompt"])}
        if "short_side" in row:
            settings["short_side"] = int(row["short_side"])
        return settings
    except (OSError, ValueError, KeyError, StopIteration):
        return {}


def _save_png(path: Path, image: Image.Image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def run_demo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    scenes: int = 1,
    size: int = 256,
    checkpoint: str | os.PathLike | None = None,
    teacher: str | None = None,
    baseline: bool = True,
    device: str = "cpu",
) -> DemoResult:
    """Segment ShapeWorld scenes `seed` .. `seed + scenes - 1` (side `size`) and write the demo
    picture into `out`.

    Writes `demo.png` (the panel: a row per scene), `scene.png` (the first scene), `demo.json`
    (settings, each scene's mIoU per method and their mean) and one `<method>_overlay.png` per method
    (the first scene).

    Args:
        out: the output folder (created).
        seed: the first scene to draw.
        scenes: how many consecutive scenes (rows), 1 to 16.
        size: the scenes' side in pixels, 64 to 2048.
        checkpoint: the ZeroSeg checkpoint (default: the bundled model).
        teacher: the teacher spec for the MaskCLIP column (default: the bundled teacher, with the
            background settings the ShapeWorld frontier tuned for it).
        baseline: add the MaskCLIP column.
        device: where to run.

    Returns:
        A `DemoResult`: the panel's path, every file written and each method's mean scene mIoU.

    Raises:
        ZerosegError: a bad size, seed or scene count, `out` is a file, or a model cannot be loaded.
    """
    from zeroseg import bundled
    from zeroseg.infer.segmenter import Segmenter

    out = _check_demo_args(out, seed, size, scenes)
    ckpt = Path(checkpoint) if checkpoint is not None else bundled.bundled_checkpoint()
    methods = {"ZeroSeg": (Segmenter(ckpt, device=device), {})}
    if baseline:
        methods["MaskCLIP"] = _baseline_segmenter(teacher, methods["ZeroSeg"][0].checkpoint.templates, device)
    rows = [_demo_scene(seed + i, size, methods) for i in range(scenes)]
    first = rows[0]
    files: list[Path] = []
    for method, shown in first["overlays"].items():
        path = out / f"{method.lower()}_overlay.png"
        _save_png(path, shown)
        files.append(path)
    scores = {m: float(np.mean([r["record"]["scene_mIoU"][m] for r in rows])) for m in methods}
    record = {"seed": seed, "scenes": [r["record"] for r in rows], "size": size, "checkpoint": str(ckpt),
              "classes": first["names"], "scene_mIoU": scores}  # fmt: skip
    side = max(TILE_MIN, size)
    written = _write_demo_files(out, stack([panel(r["tiles"], side) for r in rows]), first["image"], record)
    return DemoResult(written[0], [*written, *files], scores)


def _demo_scene(seed: int, size: int, methods: dict[str, tuple[Any, dict]]) -> dict[str, Any]:
    """One scene segmented by every method: its tiles, the first-scene files' content, its record."""
    from zeroseg.shapeworld.write import class_names, generate_scene

    scene = generate_scene(seed, size, index=0)
    image = Image.fromarray(scene.image)
    truth = scene.label_mask(DEMO_LABELS)
    names = class_names(DEMO_LABELS)
    classes = [[n] for n in names[1:]]  # index 0 is background, added by the label space
    tiles = [(f"scene {seed}", image), ("ground truth", overlay(image, truth, names))]
    scores: dict[str, float] = {}
    overlays: dict[str, Image.Image] = {}
    for method, (segmenter, call) in methods.items():
        result = segmenter([image], classes, **call)[0]
        scores[method] = scene_miou(result.labels, truth, len(names))
        overlays[method] = overlay(image, result.labels, list(result.class_names))
        tiles.append((f"{method} mIoU {scores[method]:.2f}", overlays[method]))
    objects = [{k: o[k] for k in ("colour", "shape")} for o in scene.objects]
    return {"image": image, "names": names, "tiles": tiles, "overlays": overlays,
            "record": {"seed": seed, "scene_mIoU": scores, "objects": objects}}  # fmt: skip


def stack(rows: list[Image.Image]) -> Image.Image:
    """Panels one above the other with a small gap."""
    gap = 6
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)),
                    (255, 255, 255))  # fmt: skip
    y = 0
    for row in rows:
        out.paste(row, (0, y))
        y += row.height + gap
    return out


def _check_demo_args(out: str | os.PathLike, seed: int, size: int, scenes: int = 1) -> Path:
    """`out` as a Path, after checking the scenes' size, seed and count and that `out` is not a file.

    Raises:
        ZerosegError: a size outside 64..2048, a negative seed, a count outside 1..16, or `out` is a
            file.
    """
    if size < 64 or size > 2048:
        raise ZerosegError(f"--size must be in 64..2048 pixels, got {size}")
    if seed < 0:
        raise ZerosegError(f"--seed must be >= 0, got {seed}")
    if not 1 <= scenes <= MAX_SCENES:
        raise ZerosegError(f"--scenes must be in 1..{MAX_SCENES}, got {scenes}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder for the demo outputs")
    return out


def _baseline_segmenter(teacher: str | None, templates: Sequence[str], device: str) -> tuple[Any, dict]:
    """The MaskCLIP column's segmenter on `teacher` (default: the bundled teacher) with the student's
    prompt templates, and the call settings (bg_thresh, bg_prompt) the ShapeWorld frontier tuned for
    the bundled teacher at the bundled model's short side (none for another teacher)."""
    from zeroseg import bundled
    from zeroseg.infer.maskclip import MaskCLIPSegmenter

    spec = teacher if teacher is not None else str(bundled.bundled_teacher())
    tuned = bundled_baseline_settings() if teacher is None else {}
    segmenter = MaskCLIPSegmenter.from_spec(
        spec, device=device, templates=templates, short_side=tuned.pop("short_side", None)
    )
    return segmenter, tuned


def _write_demo_files(out: Path, picture: Image.Image, scene: Image.Image, record: dict) -> list[Path]:
    """Write the panel (demo.png), the scene (scene.png) and the record (demo.json) atomically.

    Returns:
        Their paths, in that order.
    """
    panel_path, scene_path, json_path = out / "demo.png", out / "scene.png", out / "demo.json"
    _save_png(panel_path, picture)
    _save_png(scene_path, scene)
    atomic_write_json(json_path, record)
    return [panel_path, scene_path, json_path]
