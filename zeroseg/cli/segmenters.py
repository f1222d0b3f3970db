"""The segmenter of `zeroseg segment` and `zeroseg eval` from their shared options.

ZeroSeg models — a checkpoint, `bundled` or any exported bundle (`--engine`) — are built by
`zeroseg.load`; the training-free baselines (MaskCLIP, ClearCLIP, SCLIP, NACLIP) by
`MaskCLIPSegmenter.from_spec` with the method's mode.
"""

from __future__ import annotations

from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.factory import head_name


def _model_segmenter(
    source: str | Path, *, engine: bool, device: str | None, precision: str | None, runtime: str | None,
    threads: int | None, short_side: int | None, head: str | None,
) -> SegmenterBase:  # fmt: skip
    """`zeroseg.load` on a checkpoint or a bundle (which refuses a head an engine was not exported
    with); an engine's device defaults to its runtime's."""
    from zeroseg.export.loader import load
    from zeroseg.utils.device import resolve_device

    if engine:
        dev = None if device in (None, "auto") else device
    else:
        dev = resolve_device(device or "cpu")
    return load(
        source, device=dev, precision=precision, runtime=runtime, threads=threads, short_side=short_side,
        head=head,
    )  # fmt: skip


def _baseline(method: str, teacher: str | None, templates: str | None, *, device: str | None,
              short_side: int | None, head: str | None) -> SegmenterBase:  # fmt: skip
    """A training-free baseline (`--method maskclip|clearclip|sclip|naclip`) on `--teacher`
    (`bundled` resolved, with the bundled checkpoint's templates)."""
    from zeroseg.bundled import maskclip_teacher_and_templates
    from zeroseg.infer.factory import baseline_mode
    from zeroseg.infer.maskclip import MaskCLIPSegmenter
    from zeroseg.utils.device import resolve_device

    teacher, prompts = maskclip_teacher_and_templates(teacher, templates)
    if teacher is None:
        raise ZerosegError(f"--method {method} needs --teacher (the CLIP whose dense features it uses)")
    if head is not None and head_name(head) != "paper":
        raise ZerosegError(f"--head is a ZeroSeg option; {method}'s head is always dense")
    dev = resolve_device(device or "cpu")
    return MaskCLIPSegmenter.from_spec(
        teacher, device=dev, short_side=short_side, templates=prompts, mode=baseline_mode(method)
    )


def cli_segmenter(
    method: str,
    *,
    checkpoint: str | Path | None,
    teacher: str | None = None,
    templates: str | None = None,
    device: str | None = None,
    short_side: int | None = None,
    head: str | None = None,
    engine: str | Path | None = None,
    precision: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
) -> SegmenterBase:
    """The segmenter the options name, with every refusal in one line before anything loads.

    Args:
        method: `--method` (zeroseg | maskclip | clearclip | sclip | naclip).
        checkpoint: the ZeroSeg checkpoint or `bundled` (None with --engine or for a baseline).
        teacher, templates: the baselines' `--teacher` and `--templates`.
        device: `--device` (None: the CPU, or an engine's own device); short_side: `--short-side`;
            head: `--head` (paper | dense; None: the checkpoint's recorded head, else paper, or an
            engine's own).
        engine: `--engine`, a folder any `zeroseg-export` command wrote.
        precision, runtime, threads: `--precision`, `--runtime`, `--threads` (ZeroSeg models).

    Returns:
        The segmenter.
    """
    from zeroseg.infer.factory import BASELINES, METHODS

    if method not in METHODS:
        raise ZerosegError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    head = None if head is None else head_name(head)
    if method in BASELINES:
        if engine is not None:
            raise ZerosegError(
                f"--engine runs an exported ZeroSeg bundle; it does not combine with --method {method}"
            )
        if precision is not None or runtime is not None:
            raise ZerosegError(
                f"--precision and --runtime are options of ZeroSeg models, not of --method {method}"
            )
        return _baseline(method, teacher, templates, device=device, short_side=short_side, head=head)
    if templates is not None:
        raise ZerosegError(
            "--templates is an option of the training-free baselines (--method maskclip, clearclip, "
            "sclip, naclip): a ZeroSeg model carries its own templates"
        )
    source = engine if engine is not None else checkpoint
    if source is None:
        raise ZerosegError("no model given: pass a checkpoint (or 'bundled'), or --engine DIR")
    return _model_segmenter(
        source, engine=engine is not None, device=device, precision=precision, runtime=runtime,
        threads=threads, short_side=short_side, head=head,
    )  # fmt: skip
