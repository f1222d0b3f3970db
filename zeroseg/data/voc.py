"""Evaluation data in the PASCAL VOC layout, and class-name lists.

A data set folder holds `JPEGImages/<id>.jpg` (or .png), `SegmentationClass/<id>.png` (palette or
grey PNG whose values are class indices, 255 = ignore), `ImageSets/Segmentation/<split>.txt` (one id
per line) and, optionally, `classes.txt`. A class file has one class per line, synonyms comma-
separated (the first one names the class), `background` first when the set has one. Real PASCAL VOC
2012 has no class file: pass a built-in set (`voc21`, `voc20`, `context59`, `context60`,
`coco_object`), whose synonyms follow the open-vocabulary convention of SCLIP's class-name files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from zeroseg.classes import BUILTIN_CLASS_SETS, load_classes
from zeroseg.data.images import open_rgb
from zeroseg.errors import ZerosegError

_DATASET_HINT = "expected the PASCAL VOC layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A label PNG as int64 class indices: palette PNGs give their indices (not colours), grey PNGs
    (8 or 16 bit) their values."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                return np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise ZerosegError(f"mask not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ZerosegError(f"not a readable mask image: {path} ({type(exc).__name__})") from None
    raise ZerosegError(
        f"mask {path} is a {mode} image; masks must be palette or greyscale PNGs of class indices "
        "(255 = ignore)"
    )


class VOCDataset:
    """Images and masks of one split of a VOC-layout folder.

    Items are (PIL RGB image, int64 (H, W) mask, id); images and masks are read on access.
    `class_synonyms` / `class_names` hold the class list, `has_background` says whether its first
    class is "background".

    Args:
        root: the data set folder (see the module docstring for its layout).
        split: the split file `ImageSets/Segmentation/<split>.txt`.
        classes_file: a class file path or a built-in set name (default: `<root>/classes.txt`).
        reduce_zero_label: mmseg's option (e.g. ADE20K / Context59): label 0 becomes ignore, the
            others shift down by 1.

    Raises:
        ZerosegError: a missing folder, sub-folder or split file, an empty split, an id without its
            image or mask, or no class list.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        classes_file: str | os.PathLike | None = None,
        *,
        reduce_zero_label: bool = False,
    ) -> None:
        self.root = root = Path(root)
        self.split = split
        self.reduce_zero_label = reduce_zero_label
        if not root.is_dir():
            raise ZerosegError(f"data set folder not found: {root} ({_DATASET_HINT})")
        for sub in ("JPEGImages", "SegmentationClass"):
            if not (root / sub).is_dir():
                raise ZerosegError(f"{root} has no {sub}/ folder; {_DATASET_HINT}")
        sets = root / "ImageSets" / "Segmentation"
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            found = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            have = f"found: {', '.join(found)}" if found else f"{_DATASET_HINT}"
            raise ZerosegError(f"split file not found: {split_file} ({have})")
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise ZerosegError(f"split file {split_file} lists no image ids")
        self.image_paths = [self._image_path(i) for i in self.ids]
        self.mask_paths = [root / "SegmentationClass" / f"{i}.png" for i in self.ids]
        missing = [i for i, p in zip(self.ids, self.mask_paths, strict=True) if not p.is_file()]
        if missing:
            raise ZerosegError(
                f"{len(missing)} of {len(self.ids)} ids in {split_file.name} have no mask in "
                f"{root / 'SegmentationClass'} (first: {missing[0]}.png)"
            )
        if classes_file is None:
            default = root / "classes.txt"
            if not default.is_file():
                raise ZerosegError(
                    f"no classes.txt in {root}; pass a class file or a built-in set "
                    f"({', '.join(BUILTIN_CLASS_SETS)}), e.g. --classes voc21 for PASCAL VOC"
                )
            classes_file = default
        self.class_synonyms = load_classes(classes_file)
        self.class_names = [c[0] for c in self.class_synonyms]
        late = [i for i, name in enumerate(self.class_names) if name.strip().lower() == "background" and i]
        if late:
            raise ZerosegError(
                f"{classes_file} lists 'background' as class {late[0]} (0-based), but label 0 of the masks "
                "is background: list it first (or leave it out for data sets without background)"
            )

    def _image_path(self, item: str) -> Path:
        for suffix in _IMAGE_SUFFIXES:
            path = self.root / "JPEGImages" / f"{item}{suffix}"
            if path.is_file():
                return path
        raise ZerosegError(f"image for id {item} not found in {self.root / 'JPEGImages'} (.jpg or .png)")

    @property
    def num_classes(self) -> int:
        """Number of classes of the class list."""
        return len(self.class_names)

    @property
    def has_background(self) -> bool:
        """True when the first class is "background" (label 0 is then background)."""
        return self.class_names[0].lower() == "background"

    def __len__(self) -> int:
        return len(self.ids)

    def load_mask(self, index: int) -> np.ndarray:
        """The int64 (H, W) mask of item `index` (after reduce_zero_label)."""
        mask = read_mask(self.mask_paths[index])
        if self.reduce_zero_label:
            mask = np.where(mask == 0, 255, mask - 1)
            mask[mask == 254] = 255
        return mask

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray, str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        image = open_rgb(self.image_paths[index])
        mask = self.load_mask(index)
        if mask.shape != (image.height, image.width):
            raise ZerosegError(
                f"mask {self.mask_paths[index]} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.width}x{image.height}; they must match"
            )
        return image, mask, self.ids[index]

    def __iter__(self) -> Iterator[tuple[Image.Image, np.ndarray, str]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"VOCDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} images, "
            f"{self.num_classes} classes)"
        )
