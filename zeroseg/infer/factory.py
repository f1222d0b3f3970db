"""Build a segmenter by method name: what `zeroseg segment` and `zeroseg eval` share."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase

if TYPE_CHECKING:
    import torch

METHODS: tuple[str, ...] = ("zeroseg", "maskclip")


def check_engine_head(head: str, templates: str | None = None) -> None:
    """Refuse a head other than the paper's on an exported engine (the engines run only that one),
    and MaskCLIP's `--templates` (an engine's vocabulary and templates come from its bundle)."""
    if head != "segments":
        raise ZerosegError("--head dense runs in PyTorch only (engines run the paper's head): drop --head")
    if templates is not None:
        raise ZerosegError("--templates is a --method maskclip option: an engine carries its own templates")


def maskclip_teacher_and_templates(teacher: str, templates: str | None) -> tuple[str, list[str] | None]:
    """The teacher spec and prompt templates of `--method maskclip`.

    `bundled` names the bundled ShapeWorld teacher; with it the default templates are the bundled
    checkpoint's six ShapeWorld ones (what the proof and the bench give MaskCLIP), with any other
    teacher MaskCLIP's own 80 ImageNet ones (None). `templates` (a name or a file, as for
    `zeroseg train --templates`) overrides either.
    """
    from pathlib import Path

    from zeroseg.classes import resolve_templates
    from zeroseg.shapeworld.bundled import ASSETS, BUNDLED_NAME, TEACHER_NAME, bundled_teacher

    if teacher == BUNDLED_NAME:
        teacher = str(bundled_teacher())
    if templates is not None:
        return teacher, resolve_templates(templates)
    is_bundled = Path(teacher).expanduser().resolve() == (ASSETS / TEACHER_NAME).resolve()
    return teacher, resolve_templates("shapeworld") if is_bundled else None


def build_segmenter(
    method: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    teacher: str | None = None,
    device: str | torch.device = "cpu",
    short_side: int | None = None,
    head: str = "segments",
    templates: str | None = None,
) -> SegmenterBase:
    """The ZeroSeg `Segmenter` of a checkpoint, or the MaskCLIP baseline on a teacher.

    Args:
        method: "zeroseg" (needs `checkpoint`) or "maskclip" (needs `teacher`, an open_clip spec or
            teacher file; see `zeroseg.teacher.clip.load_teacher`).
        checkpoint: the ZeroSeg checkpoint.
        teacher: the CLIP whose dense features MaskCLIP names.
        device: where to run.
        short_side: network input short side (default: the method's own).
        head: the ZeroSeg head, "segments" (the paper's) or "dense" (ours; `zeroseg.infer.segmenter`).
        templates: MaskCLIP's prompt templates, a name or a file (`maskclip_teacher_and_templates`);
            a ZeroSeg checkpoint carries its own.

    Returns:
        A segmenter with the common call (`zeroseg.infer.base.SegmenterBase`).
    """
    if method not in METHODS:
        raise ZerosegError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    from zeroseg.utils.device import resolve_device

    device = resolve_device(device)  # one line for cuda without a GPU or an unknown device
    if method == "maskclip":
        from zeroseg.infer.maskclip import MaskCLIPSegmenter

        if teacher is None:
            raise ZerosegError("--method maskclip needs --teacher (the CLIP whose dense features it uses)")
        if head != "segments":
            raise ZerosegError("--head is a ZeroSeg option; MaskCLIP's head is always dense")
        teacher, prompts = maskclip_teacher_and_templates(teacher, templates)
        return MaskCLIPSegmenter.from_spec(teacher, device=device, short_side=short_side, templates=prompts)
    from zeroseg.infer.segmenter import Segmenter

    if templates is not None:
        raise ZerosegError(
            "--templates is a --method maskclip option: a checkpoint carries its own templates"
        )

    if checkpoint is None:
        raise ZerosegError("--method zeroseg needs a checkpoint")
    return Segmenter.from_checkpoint(checkpoint, device=device, short_side=short_side, head=head)
