"""Images for static int8 calibration and the int8 accuracy check: `--calib DIR` or ShapeWorld scenes.

A `--calib` folder is either any folder of images (searched recursively) or a VOC-layout data set
(`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/<split>.txt`, `classes.txt`); with
masks, the export also scores fp32 and int8 mIoU on it. Without `--calib`, 64 ShapeWorld scenes are
generated (VOC layout, so the mIoU change is measured too).
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from zeroseg.data.images import list_images, open_rgb
from zeroseg.errors import ZerosegError

DEFAULT_SCENES = 64
#: Seed of the generated calibration scenes (apart from the proof's train/val/tune seeds).
CALIB_SEED = 31337
MAX_CALIB_IMAGES = 64
#: The generated scenes: side, label set and JPEG quality (what `zeroseg synth --kind scenes` writes).
SCENE_SIZE = 128
SCENE_LABELS = "colour"
JPEG_QUALITY = 95
_SPLITS = ("val", "trainval", "train", "test")


@dataclass
class CalibrationSet:
    """The images to calibrate on, and the VOC root + split to score mIoU on (None without masks)."""

    images: list[Image.Image]
    voc_root: Path | None
    split: str | None
    source: str


def voc_split(root: Path) -> str | None:
    """The split of a VOC-layout folder to score on, or None when it is not one (no masks / lists)."""
    sets = root / "ImageSets" / "Segmentation"
    if not ((root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir() and sets.is_dir()):
        return None
    if not (root / "classes.txt").is_file():
        return None
    return next((s for s in _SPLITS if (sets / f"{s}.txt").is_file()), None)


def check_calib_folder(calib: Path, *, decode: bool = True) -> list[Path]:
    """The image files of a `--calib` folder (JPEGImages/ of a VOC layout), refused when there are none.

    Everything the export will read from it is checked here, before any export work: the first
    `MAX_CALIB_IMAGES` images decode (`open_rgb`), and a VOC layout's split, masks and class list
    open (`VOCDataset`), so that a bad folder is one line at once, not after the graphs are built.

    Args:
        calib: the folder.
        decode: also decode the images and open the VOC layout (False: only list them).

    Raises:
        ZerosegError: no folder, no images, an unreadable image, or a broken VOC layout.
    """
    if not calib.is_dir():
        raise ZerosegError(f"--calib folder not found: {calib} (pass a folder of images)")
    where = calib / "JPEGImages" if (calib / "JPEGImages").is_dir() else calib
    files = list_images(where)
    if not files:
        raise ZerosegError(
            f"--calib folder {calib} holds no images (.jpg, .png, ...); add some or omit --calib"
        )
    if decode:
        for path in files[:MAX_CALIB_IMAGES]:
            try:
                open_rgb(path)
            except ZerosegError as exc:
                raise ZerosegError(f"--calib folder {calib}: {exc}; remove or replace it") from None
        split = voc_split(calib)
        if split is not None:
            from zeroseg.data.voc import VOCDataset

            try:
                VOCDataset(calib, split)
            except ZerosegError as exc:
                raise ZerosegError(f"--calib folder {calib} is not a usable VOC layout: {exc}") from None
    return files


def write_calibration_scenes(root: Path, n: int = DEFAULT_SCENES, seed: int = CALIB_SEED) -> None:
    """Write ShapeWorld scenes 0..n-1 of `seed` (`zeroseg.data.scenes`) as a VOC-layout val split.

    The files are those `zeroseg synth --kind scenes --val-fraction 1` writes (JPEG quality 95 without
    chroma subsampling, colour masks as palette PNGs, `classes.txt`), so calibration and the int8
    mIoU see the same images.
    """
    from zeroseg.data.scenes import class_names, generate_scene
    from zeroseg.infer.visualize import encode_label_png

    sets = root / "ImageSets" / "Segmentation"
    for sub in (root / "JPEGImages", root / "SegmentationClass", sets):
        sub.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        scene = generate_scene(seed, SCENE_SIZE, index=i)
        item = f"{i:06d}"
        buf = io.BytesIO()  # 4:4:4 chroma: colour is the label, so keep colour edges sharp
        Image.fromarray(scene.image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        (root / "JPEGImages" / f"{item}.jpg").write_bytes(buf.getvalue())
        (root / "SegmentationClass" / f"{item}.png").write_bytes(
            encode_label_png(scene.label_mask(SCENE_LABELS))
        )
        ids.append(item)
    for split in ("val", "trainval"):
        (sets / f"{split}.txt").write_text("".join(f"{item}\n" for item in ids))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in class_names(SCENE_LABELS)))


def calibration_set(calib: Path | None, work: Path) -> CalibrationSet:
    """Load `--calib` (its first MAX_CALIB_IMAGES images) or generate the default scenes under `work`."""
    if calib is None:
        root = Path(tempfile.mkdtemp(prefix="calib-", dir=work))
        write_calibration_scenes(root)
        files = check_calib_folder(root, decode=False)
        return CalibrationSet(
            [open_rgb(p) for p in files],
            root,
            "val",
            f"{DEFAULT_SCENES} ShapeWorld scenes (seed {CALIB_SEED})",
        )
    files = check_calib_folder(calib, decode=False)[:MAX_CALIB_IMAGES]
    split = voc_split(calib)
    return CalibrationSet(
        [open_rgb(p) for p in files], calib if split else None, split, f"{len(files)} images from {calib}"
    )
