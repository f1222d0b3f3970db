"""The small ShapeWorld model that ships inside the package (the default of the bench and the demo).

`zeroseg/assets/shapeworld.pt` is a ZeroSeg checkpoint (fp16, inference-only) distilled from the
tiny CLIP in `zeroseg/assets/shapeworld_teacher.pt`, both made by `python -m zeroseg.shapeworld.proof
--bundle` (see README, "ShapeWorld"). They let every command run on a fresh machine with no network.
"""

from __future__ import annotations

from pathlib import Path

from zeroseg.errors import ZerosegError

ASSETS = Path(__file__).resolve().parent / "assets"
CHECKPOINT_NAME = "shapeworld.pt"
TEACHER_NAME = "shapeworld_teacher.pt"
#: The proof table of the bundled model (and each method's tuned background settings).
PROOF_NAME = "shapeworld.json"
REBUILD_HINT = "rebuild it with `python -m zeroseg.shapeworld.proof --bundle`"


def bundled_checkpoint() -> Path:
    """Path of the bundled ShapeWorld ZeroSeg checkpoint.

    Returns:
        `zeroseg/assets/shapeworld.pt`.

    Raises:
        ZerosegError: the file is missing (the message says how to rebuild it).
    """
    path = ASSETS / CHECKPOINT_NAME
    if not path.is_file():
        raise ZerosegError(f"the bundled checkpoint {path} is missing; {REBUILD_HINT}")
    return path


def bundled_teacher() -> Path:
    """Path of the bundled ShapeWorld teacher (a tiny open_clip CLIP, usable as --teacher).

    Returns:
        `zeroseg/assets/shapeworld_teacher.pt`, a teacher file for `load_teacher`.

    Raises:
        ZerosegError: the file is missing (the message says how to rebuild it).
    """
    path = ASSETS / TEACHER_NAME
    if not path.is_file():
        raise ZerosegError(f"the bundled teacher {path} is missing; {REBUILD_HINT}")
    return path


#: What users type on a command line for the bundled checkpoint (and, for MaskCLIP, the teacher).
BUNDLED_NAME = "bundled"


def resolve_model_path(path: str | Path) -> Path:
    """`bundled` -> the bundled checkpoint; any other path as given (commands accept either)."""
    return bundled_checkpoint() if str(path) == BUNDLED_NAME else Path(path)


def maskclip_teacher_and_templates(
    teacher: str | None, templates: str | None
) -> tuple[str | None, list[str] | None]:
    """The teacher and prompt templates of `zeroseg segment/eval --method maskclip`.

    `bundled` names the bundled teacher; with it the default templates are the bundled checkpoint's
    six ShapeWorld ones (what the proof and the bench give MaskCLIP); with any other teacher the
    default is None (MaskCLIP's own 80 ImageNet templates).

    Args:
        teacher: `--teacher` (None when not given).
        templates: `--templates`, a name or a file as for `zeroseg train --templates`; overrides
            the default.

    Returns:
        The teacher spec (the bundled name resolved to its file) and the templates, or None.
    """
    from zeroseg.classes import resolve_templates

    if teacher == BUNDLED_NAME:
        teacher = str(bundled_teacher())
    if templates is not None:
        return teacher, resolve_templates(templates)
    is_bundled = (
        teacher is not None and Path(teacher).expanduser().resolve() == (ASSETS / TEACHER_NAME).resolve()
    )
    return teacher, resolve_templates("shapeworld") if is_bundled else None
