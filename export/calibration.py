"""Images for static int8 calibration and the int8 accuracy check: `--calib DIR` or ShapeWorld scenes.

A `--calib` folder is either any folder of images (searched recursively) or a VOC-layout data set
(`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/<split>.txt`, `classes.txt`); with
masks, the export also scores fp32 and int8 mIoU on it. Without `--calib`, 64 ShapeWorld scenes are
generated (VOC layout, so the mIoU change is measured too).
"""

from __future__ import annotations

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


def check_calib_folder(calib: Path) -> list[Path]:
    """The image files of a `--calib` folder (JPEGImages/ of a VOC layout), refused when there are none."""
    if not calib.is_dir():
        raise ZerosegError(f"--calib folder not found: {calib} (pass a folder of images)")
    where = calib / "JPEGImages" if (calib / "JPEGImages").is_dir() else calib
    files = list_images(where)
    if not files:
        raise ZerosegError(
            f"--calib folder {calib} holds no images (.jpg, .png, ...); add some or omit --calib"
        )
    return files


def calibration_set(calib: Path | None, work: Path) -> CalibrationSet:
    """Load `--calib` (its first MAX_CALIB_IMAGES images) or generate the default scenes under `work`."""
    if calib is None:
        from zeroseg.shapeworld.write import write_scenes

        root = Path(tempfile.mkdtemp(prefix="calib-", dir=work))
        write_scenes(root, n=DEFAULT_SCENES, seed=CALIB_SEED, size=128, val_fraction=1.0)
        files = check_calib_folder(root)
        return CalibrationSet(
            [open_rgb(p) for p in files],
            root,
            "val",
            f"{DEFAULT_SCENES} ShapeWorld scenes (seed {CALIB_SEED})",
        )
    files = check_calib_folder(calib)[:MAX_CALIB_IMAGES]
    split = voc_split(calib)
    return CalibrationSet(
        [open_rgb(p) for p in files], calib if split else None, split, f"{len(files)} images from {calib}"
    )
