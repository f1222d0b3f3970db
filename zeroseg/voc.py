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

from zeroseg.errors import ZerosegError
from zeroseg.imageio import open_rgb
from zeroseg.text import parse_class_names, read_class_file

# Stuff words standing in for "background" in VOC21 (as SCLIP does), "background" itself first.
_VOC_BACKGROUND = (
    "background, sky, wall, tree, wood, grass, road, sea, river, mountain, sands, desk, bed, building, "
    "cloud, lamp, door, window, wardrobe, ceiling, shelf, curtain, stair, floor, hill, rail, fence"
)
# COCO-Object has "bed" and "dining table" as classes, so those stuff words are left out here.
_COCO_BACKGROUND = (
    "background, sky, wall, tree, wood, grass, road, sea, river, mountain, sands, building, cloud, "
    "lamp, door, window, wardrobe, ceiling, shelf, curtain, stair, floor, hill, rail, fence"
)
_PERSON = (
    "person, person in shirt, person in jeans, person in dress, person in sweater, person in skirt, "
    "person in jacket"
)

_VOC20 = (
    "aeroplane, airplane",
    "bicycle",
    "bird",
    "boat, ship",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table, table",
    "dog",
    "horse",
    "motorbike, motorcycle",
    _PERSON,
    "potted plant",
    "sheep",
    "sofa, couch",
    "train",
    "tv monitor, television monitor, monitor, television, screen",
)

_CONTEXT59 = (
    "aeroplane, airplane|bag|bed|bedclothes|bench|bicycle|bird|boat, ship|book|bottle|building|bus|cabinet|"
    "car|cat|ceiling|chair|cloth|computer|cow|cup|curtain|dog|door|fence|floor|flower|food|grass|ground|"
    "horse|keyboard|light|motorbike, motorcycle|mountain|mouse|person|plate|platform|potted plant|road|rock|"
    "sheep|shelves|sidewalk|sign|sky|snow|sofa, couch|table|track|train|tree|truck|tv monitor, monitor|wall|"
    "water|window|wood"
).split("|")

_COCO80 = (
    f"{_PERSON}|bicycle|car|motorcycle|airplane|bus|train|truck|boat|traffic light|fire hydrant|stop sign|"
    "parking meter|bench|bird|cat|dog|horse|sheep|cow|elephant|bear|zebra|giraffe|backpack|umbrella|"
    "handbag|tie|suitcase|frisbee|skis|snowboard|sports ball|kite|baseball bat|baseball glove|skateboard|"
    "surfboard|tennis racket|bottle|wine glass|cup|fork|knife|spoon|bowl|banana|apple|sandwich|orange|"
    "broccoli|carrot|hot dog|pizza|donut|cake|chair|couch|potted plant|bed|dining table|toilet|tv|laptop|"
    "mouse|remote|keyboard|cell phone|microwave|oven|toaster|sink|refrigerator|book|clock|vase|scissors|"
    "teddy bear|hair drier|toothbrush"
).split("|")


def _parse(lines: list[str]) -> list[list[str]]:
    return parse_class_names(lines)


#: Built-in class sets by name: each class is a list of synonyms, the first naming it.
BUILTIN_CLASS_SETS: dict[str, list[list[str]]] = {
    "voc21": _parse([_VOC_BACKGROUND, *_VOC20]),
    "voc20": _parse(_VOC20),
    "context59": _parse(_CONTEXT59),
    "context60": _parse(["background", *_CONTEXT59]),
    "coco_object": _parse([_COCO_BACKGROUND, *_COCO80]),
}

_DATASET_HINT = "expected the PASCAL VOC layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def load_classes(spec: str | os.PathLike) -> list[list[str]]:
    """A class list from a built-in set name (voc21, voc20, context59, context60, coco_object) or a file."""
    key = str(spec).strip().lower().replace("-", "_")
    if key in BUILTIN_CLASS_SETS and not Path(spec).is_file():
        return [list(c) for c in BUILTIN_CLASS_SETS[key]]
    if not Path(spec).is_file():
        raise ZerosegError(
            f"class file not found: {spec} (give a class file or one of {', '.join(BUILTIN_CLASS_SETS)})"
        )
    return read_class_file(spec)


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

    `classes_file`: a class file path or a built-in set name; default `<root>/classes.txt`.
    `reduce_zero_label` (mmseg, e.g. ADE20K / Context59): label 0 becomes ignore, others shift down by 1.
    Items are (PIL RGB image, int64 (H, W) mask, id).
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

    def _image_path(self, item: str) -> Path:
        for suffix in _IMAGE_SUFFIXES:
            path = self.root / "JPEGImages" / f"{item}{suffix}"
            if path.is_file():
                return path
        raise ZerosegError(f"image for id {item} not found in {self.root / 'JPEGImages'} (.jpg or .png)")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_background(self) -> bool:
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
