"""Class names and prompt templates: parsing, built-in vocabularies and template sets.

Everything here is plain text handling with no model: what the user typed (`--labels`, a class file,
a built-in set name) becomes class entries, each a list of synonyms whose embeddings are averaged;
templates ("a photo of a {}.") say how a name becomes a prompt. The text tower that embeds them is
`zeroseg.text`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from zeroseg.errors import ZerosegError

# IMAGENET_TEMPLATES (the 80 OpenAI ImageNet prompt templates) is computed on first access: see
# `imagenet_templates` and the module `__getattr__`.


SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)


@functools.cache
def imagenet_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet prompt templates as format strings with one "{}", read from open_clip
    on first use so that parsing class names never imports torch (the ONNX runtime runs without it)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def __getattr__(name: str):
    """`IMAGENET_TEMPLATES` is `imagenet_templates()`, computed on first access (PEP 562)."""
    if name == "IMAGENET_TEMPLATES":
        return imagenet_templates()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _entries(text_or_lines: str | Iterable) -> list:
    if isinstance(text_or_lines, str):
        return [part for line in text_or_lines.splitlines() for part in line.split(";")]
    return list(text_or_lines)


def parse_class_names(text_or_lines: str | Iterable[str] | Iterable[Sequence[str]]) -> list[list[str]]:
    """Class entries, each a list of synonyms (embeddings averaged).

    Blank entries and lines starting with '#' are skipped; whitespace is collapsed; repeated
    synonyms within an entry are dropped.

    Args:
        text_or_lines: a string with one class per line or per ';', or a list with one class per
            item; within an entry synonyms are comma-separated ("sofa, couch") or already a list.

    Returns:
        One list of synonyms per class, in order; the first synonym names the class.

    Raises:
        ZerosegError: no classes, or a class (its first name, case-insensitive) given twice.
    """
    classes: list[list[str]] = []
    seen: dict[str, int] = {}
    for raw in _entries(text_or_lines):
        # synonyms: "sofa, couch" (the documented form) or "sofa|couch" (as in --labels)
        parts = re.split(r"[,|]", raw) if isinstance(raw, str) else [str(p) for p in raw]
        if isinstance(raw, str) and raw.strip().startswith("#"):
            continue
        names: list[str] = []
        for part in parts:
            name = re.sub(r"\s+", " ", part).strip()
            if name and name not in names:
                names.append(name)
        if not names:
            continue
        key = names[0].casefold()
        if key in seen:
            raise ZerosegError(
                f"class {names[0]!r} is listed twice (entries {seen[key] + 1} and {len(classes) + 1}): "
                "remove one, or put synonyms on one line separated by commas"
            )
        seen[key] = len(classes)
        classes.append(names)
    if not classes:
        raise ZerosegError("no class names given: list one class per line (synonyms separated by commas)")
    return classes


def read_class_file(path: str | os.PathLike) -> list[list[str]]:
    """Parse a class-name file: one class per line, synonyms comma-separated, '#' comments.

    Args:
        path: a UTF-8 text file (a byte-order mark is accepted).

    Returns:
        The class entries, as `parse_class_names` gives them.

    Raises:
        ZerosegError: the file is missing or unreadable, or its contents are refused by
            `parse_class_names` (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ZerosegError(f"class-name file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZerosegError(
            f"cannot read class-name file {path} ({type(exc).__name__}): save it as UTF-8"
        ) from None
    try:
        return parse_class_names(text.splitlines())
    except ZerosegError as exc:
        raise ZerosegError(f"{path}: {exc}") from None


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Validate prompt templates: a non-empty list of strings with exactly one '{}' each."""
    templates = tuple(templates)
    if not templates:
        raise ZerosegError("no prompt templates given")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ZerosegError(f"prompt template {t!r} must contain exactly one '{{}}' for the class name")
    return templates


#: Prompt templates for ShapeWorld classes, close to the caption styles the teacher is trained on.
SHAPEWORLD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {}",
    "an image of a {}.",
    "a drawing of a {}.",
    "a photo of the {}.",
)


def resolve_templates(spec: str) -> list[str]:
    """Prompt templates by name or from a file.

    Args:
        spec: "imagenet" (the 80 OpenAI templates), "single" ("a photo of a {}."), "shapeworld"
            (`SHAPEWORLD_TEMPLATES`), or a UTF-8 file with one template per line (blank lines
            skipped).

    Returns:
        The templates, each a format string with exactly one "{}".

    Raises:
        ZerosegError: `spec` is neither a known name nor a file, or a template is invalid.
    """
    if spec == "imagenet":
        return list(imagenet_templates())
    if spec == "single":
        return list(SINGLE_TEMPLATE)
    if spec == "shapeworld":
        return list(SHAPEWORLD_TEMPLATES)
    path = Path(spec)
    if not path.is_file():
        raise ZerosegError(f"--templates must be imagenet, single, shapeworld or a file, got {spec!r}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(check_templates(lines))


def parse_labels_option(labels: str | None, labels_file: Path | None) -> list[list[str]]:
    """The class entries of the `--labels` / `--labels-file` options (exactly one must be given).

    Args:
        labels: `--labels "cat,dog,sofa|couch"`: commas between classes, `|` between synonyms.
        labels_file: a class-name file (`read_class_file`).

    Returns:
        The class entries, as `parse_class_names` gives them.

    Raises:
        ZerosegError: neither or both given, a class named twice, or no classes.
    """
    if (labels is None) == (labels_file is None):
        raise ZerosegError('pass exactly one of --labels "cat,dog" or --labels-file FILE')
    if labels_file is not None:
        return read_class_file(labels_file)
    entries = [[" ".join(s.split()) for s in part.split("|") if s.strip()] for part in labels.split(",")]
    firsts = [e[0].casefold() for e in entries if e]
    twice = next((name for i, name in enumerate(firsts) if name in firsts[:i]), None)
    if twice is not None:  # parse_class_names' hint (commas join synonyms) is wrong for --labels
        raise ZerosegError(
            f'--labels names {twice!r} more than once: give each class once, join synonyms with "|"'
            ' (e.g. "sofa|couch")'
        )
    return parse_class_names(entries)


# Built-in vocabularies --------------------------------------------------------------------------------

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


def load_classes(spec: str | os.PathLike) -> list[list[str]]:
    """A class list from a built-in set name or a class-name file.

    Args:
        spec: a key of `BUILTIN_CLASS_SETS` (voc21, voc20, context59, context60, coco_object;
            case-insensitive, '-' read as '_'), or a class-name file (an existing file wins).

    Returns:
        The class entries (a fresh copy for a built-in set).

    Raises:
        ZerosegError: `spec` is neither a built-in set nor a file, or the file is refused by
            `read_class_file`.
    """
    key = str(spec).strip().lower().replace("-", "_")
    if key in BUILTIN_CLASS_SETS and not Path(spec).is_file():
        return [list(c) for c in BUILTIN_CLASS_SETS[key]]
    if not Path(spec).is_file():
        raise ZerosegError(
            f"class file not found: {spec} (give a class file or one of {', '.join(BUILTIN_CLASS_SETS)})"
        )
    return read_class_file(spec)
