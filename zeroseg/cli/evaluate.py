"""`zeroseg eval`: mIoU of a checkpoint (or the MaskCLIP baseline) on a VOC-layout data set."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.errors import ZerosegError


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="ZeroSeg checkpoint (.pt); ignored by --method maskclip."),
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
    short_side: int | None = typer.Option(None, "--short-side", help="Network input short side."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores here as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score segmentation with mmseg's mIoU: intersection and union summed over the split."""
    from zeroseg.data.voc import VOCDataset
    from zeroseg.evaluation.evaluate import evaluate
    from zeroseg.utils.atomic import atomic_write_json

    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if json_out is not None and json_out.is_dir():
        raise ZerosegError(
            f"--json {json_out} is a folder; pass a file name such as {json_out / 'eval.json'}"
        )
    data = VOCDataset(dataset, split, classes, reduce_zero_label=reduce_zero_label)
    from zeroseg.infer.factory import build_segmenter

    segmenter = build_segmenter(
        method, checkpoint=checkpoint, teacher=teacher, device=device, short_side=short_side
    )
    report = evaluate(
        segmenter, data, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size, limit=limit,
        progress=not quiet, on_warning=lambda m: typer.echo(f"warning: {m}", err=True),
    )  # fmt: skip
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
