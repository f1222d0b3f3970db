"""Build a segmenter by method name: what `zeroseg segment` and `zeroseg eval` share."""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def build_segmenter(
    method: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    teacher: str | None = None,
    device: str | torch.device = "cpu",
    short_side: int | None = None,
    head: str = "segments",
    templates: Sequence[str] | None = None,
) -> SegmenterBase:
    """The ZeroSeg `Segmenter` of a checkpoint, or the MaskCLIP baseline on a teacher.

    Args:
        method: "zeroseg" (needs `checkpoint`) or "maskclip" (needs `teacher`, an open_clip spec or
            teacher file; see `zeroseg.teacher.load.load_teacher`).
        checkpoint: the ZeroSeg checkpoint.
        teacher: the CLIP whose dense features MaskCLIP names.
        device: where to run.
        short_side: network input short side (default: the method's own).
        head: the ZeroSeg head, "segments" (the paper's) or "dense" (ours; `zeroseg.infer.segmenter`).
        templates: MaskCLIP's prompt templates (default: its 80 ImageNet ones); a ZeroSeg
            checkpoint carries its own.

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
        return MaskCLIPSegmenter.from_spec(teacher, device=device, short_side=short_side, templates=templates)
    from zeroseg.infer.segmenter import Segmenter

    if templates is not None:
        raise ZerosegError(
            "--templates is a --method maskclip option: a checkpoint carries its own templates"
        )

    if checkpoint is None:
        raise ZerosegError("--method zeroseg needs a checkpoint")
    return Segmenter.from_checkpoint(checkpoint, device=device, short_side=short_side, head=head)
