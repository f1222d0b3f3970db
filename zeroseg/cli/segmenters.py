"""The segmenter of `zeroseg segment` and `zeroseg eval` from their shared options."""

from __future__ import annotations

from pathlib import Path

from zeroseg.infer.base import SegmenterBase


def cli_segmenter(
    method: str,
    *,
    checkpoint: str | Path | None,
    teacher: str | None,
    templates: str | None,
    device: str,
    short_side: int | None,
    head: str,
) -> SegmenterBase:
    """`zeroseg.infer.factory.build_segmenter` after resolving `--teacher bundled` and MaskCLIP's
    `--templates` default (`zeroseg.shapeworld.bundled.maskclip_teacher_and_templates`).

    Args:
        method: `--method` (zeroseg | maskclip).
        checkpoint: the ZeroSeg checkpoint (resolved path), or None for maskclip.
        teacher: `--teacher`; templates: `--templates` (a name or a file, or None).
        device: `--device`; short_side: `--short-side`; head: `--head`.

    Returns:
        The segmenter.
    """
    from zeroseg.infer.factory import build_segmenter
    from zeroseg.shapeworld.bundled import maskclip_teacher_and_templates

    teacher, prompts = maskclip_teacher_and_templates(teacher, templates)
    return build_segmenter(
        method, checkpoint=checkpoint, teacher=teacher, device=device, short_side=short_side, head=head,
        templates=prompts,
    )  # fmt: skip
