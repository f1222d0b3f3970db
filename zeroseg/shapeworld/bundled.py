"""The small ShapeWorld model that ships inside the package (the default of the bench and the demo).

`zeroseg/assets/shapeworld.pt` is a ZeroSeg checkpoint (fp16, inference-only) distilled from the
tiny CLIP in `zeroseg/assets/shapeworld_teacher.pt`, both made by `python -m zeroseg.shapeworld.proof
--bundle` (see README, "ShapeWorld"). They let every command run on a fresh machine with no network.
"""

from __future__ import annotations

from pathlib import Path

from zeroseg.errors import ZerosegError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
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
