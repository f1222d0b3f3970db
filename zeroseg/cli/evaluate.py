"""`zeroseg eval`: mIoU of a checkpoint (or the MaskCLIP baseline) on a VOC-layout data set."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.errors import ZerosegError


def evaluate_command(
    checkpoint: Path | None = typer.Argument(
        None, help="ZeroSeg checkpoint (.pt); ignored by --method maskclip; left out with --engine."
    ),
    dataset: Path = typer.Option(
        ..., "--dataset", help="VOC-layout folder (JPEGImages, SegmentationClass...)."
    ),
    split: str = typer.Option("val", "--split", help="ImageSets/Segmentation/<split>.txt."),
    classes: str | None = typer.Option(
        None, "--classes", help="Class file, or voc21 | voc20 | context59 | context60 | coco_object."
    ),
    bg_thresh: float | None = typer.Option(
        None, "--bg-thresh", help="Paper: 0.95 VOC, 0.05 Context, 0.35 COCO."
    ),
    bg_prompt: bool | None = typer.Option(
        None, "--bg-prompt/--no-bg-prompt", help="Name background by text too."
    ),
    reduce_zero_label: bool = typer.Option(False, "--reduce-zero-label", help="Label 0 -> ignore (mmseg)."),
    method: str = typer.Option("zeroseg", "--method", help="zeroseg | maskclip."),
    teacher: str | None = typer.Option(None, "--teacher", help="CLIP for --method maskclip."),
    templates: str | None = typer.Option(
        None,
        "--templates",
        help="--method maskclip: imagenet | single | shapeworld | FILE "
        "(default: shapeworld with --teacher bundled, else imagenet).",
    ),
    short_side: int | None = typer.Option(None, "--short-side", help="Network input short side."),
    head: str = typer.Option(
        "segments", "--head", help="ZeroSeg head: segments (the paper's) | dense (ours: per-patch naming)."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores here as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    engine: Path | None = typer.Option(
        None, "--engine", help="Score an exported ONNX bundle (zeroseg-export onnx) instead of a checkpoint."
    ),
    precision: str = typer.Option("fp32", "--precision", help="With --engine: fp32 | int8."),
) -> None:
    """Score segmentation with mmseg's mIoU: intersection and union summed over the split."""
    from zeroseg.data.voc import VOCDataset
    from zeroseg.evaluation.evaluate import evaluate
    from zeroseg.utils.atomic import atomic_write_json
    from zeroseg.utils.device import resolve_device
    from zeroseg.utils.writable import ensure_writable_file

    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if json_out is not None and json_out.is_dir():
        raise ZerosegError(
            f"--json {json_out} is a folder; pass a file name such as {json_out / 'eval.json'}"
        )
    if json_out is not None:
        ensure_writable_file(json_out, "--json")  # before the compute, not after it
    resolve_device(device)
    data = VOCDataset(dataset, split, classes, reduce_zero_label=reduce_zero_label)
    if not data.has_background and not reduce_zero_label:
        typer.echo(
            f"warning: the class list has no 'background' first, so mask label 0 is scored as "
            f"{data.class_names[0]!r}; list background first, or pass --reduce-zero-label if 0 means ignore",
            err=True,
        )
    from zeroseg.infer.factory import check_engine_head

    if method == "zeroseg" and checkpoint is not None:
        from zeroseg.shapeworld.bundled import resolve_model_path

        checkpoint = resolve_model_path(checkpoint)

    if engine is not None:
        check_engine_head(head, templates)
        if checkpoint is not None or method != "zeroseg":
            raise ZerosegError("--engine replaces the checkpoint: pass either CHECKPOINT or --engine DIR")
        from zeroseg.export.runtime import OnnxSegmenter

        segmenter = OnnxSegmenter(engine, precision=precision, short_side=short_side)
    elif method == "zeroseg" and checkpoint is None:
        raise ZerosegError("no checkpoint given: zeroseg eval CHECKPOINT --dataset D (or --engine DIR)")
    else:
        from zeroseg.cli.segmenters import cli_segmenter

        segmenter = cli_segmenter(
            method, checkpoint=checkpoint, teacher=teacher, templates=templates, device=device,
            short_side=short_side, head=head,
        )  # fmt: skip
    try:
        report = evaluate(
            segmenter, data, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size, limit=limit,
            progress=not quiet, on_warning=lambda m: typer.echo(f"warning: {m}", err=True),
        )  # fmt: skip
    except KeyboardInterrupt:
        from zeroseg.utils.console import Interrupted

        raise Interrupted("interrupted: no scores were written") from None
    typer.echo(report.table)
    fg = report.summary.get("mIoU_fg")
    fg_text = f", foreground mIoU {fg:.4f}" if fg is not None else ""
    typer.echo(
        f"mIoU {report.miou:.4f}{fg_text} over {report.settings['images']} images ({report.seconds:.1f} s)"
    )
    if json_out is not None:
        atomic_write_json(json_out, {"checkpoint": str(checkpoint), "method": method, **report.to_dict()})


def register(app: typer.Typer) -> None:
    """Add `eval` to the `zeroseg` CLI."""
    app.command("eval")(evaluate_command)
