"""`zeroseg eval`: mIoU of a checkpoint (or the MaskCLIP baseline) on a VOC-layout data set."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.cli import options as opts
from zeroseg.errors import ZerosegError


def evaluate_command(
    checkpoint: Path | None = typer.Argument(
        None, help="ZeroSeg checkpoint (.pt); ignored by a baseline --method; left out with --engine."
    ),
    dataset: Path = typer.Option(
        ..., "--dataset", help="VOC-layout folder (JPEGImages, SegmentationClass...)."
    ),
    split: str = typer.Option("val", "--split", help="ImageSets/Segmentation/<split>.txt."),
    classes: str | None = typer.Option(
        None, "--classes", help="Class file, or voc21 | voc20 | context59 | context60 | coco_object."
    ),
    bg_thresh: float | None = opts.BG_THRESH,
    bg_prompt: bool | None = opts.BG_PROMPT,
    reduce_zero_label: bool = typer.Option(False, "--reduce-zero-label", help="Label 0 -> ignore (mmseg)."),
    method: str = opts.METHOD,
    teacher: str | None = opts.TEACHER,
    templates: str | None = opts.TEMPLATES,
    short_side: int | None = opts.SHORT_SIDE,
    head: str | None = opts.HEAD,
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
    device: str | None = opts.DEVICE,
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores here as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    engine: Path | None = opts.ENGINE,
    precision: str | None = opts.PRECISION,
    runtime: str | None = opts.RUNTIME,
    threads: int | None = opts.THREADS,
    strict_vocab: bool = opts.STRICT_VOCAB,
) -> None:
    """Score segmentation with mmseg's mIoU: intersection and union summed over the split."""
    from zeroseg.cli.segmenters import cli_segmenter
    from zeroseg.evaluation.evaluate import evaluate
    from zeroseg.text import vocabulary_policy
    from zeroseg.utils.atomic import atomic_write_json

    data = _dataset(dataset, split, classes, reduce_zero_label, bg_thresh=bg_thresh, json_out=json_out,
                    device=device)  # fmt: skip
    if engine is not None and checkpoint is not None:
        raise ZerosegError("--engine replaces the checkpoint: pass either CHECKPOINT or --engine DIR")
    if method == "zeroseg" and checkpoint is None and engine is None:
        raise ZerosegError("no checkpoint given: zeroseg eval CHECKPOINT --dataset D (or --engine DIR)")
    segmenter = cli_segmenter(
        method, checkpoint=checkpoint, teacher=teacher, templates=templates, device=device,
        short_side=short_side, head=head, engine=engine, precision=precision, runtime=runtime,
        threads=threads,
    )  # fmt: skip
    try:
        with vocabulary_policy(strict=strict_vocab):
            report = evaluate(
                segmenter, data, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size,
                limit=limit, progress=not quiet, on_warning=lambda m: typer.echo(f"warning: {m}", err=True),
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
        model = {"checkpoint": str(checkpoint), "engine": None if engine is None else str(engine)}
        atomic_write_json(json_out, {**model, "method": method, **report.to_dict()})


def _dataset(
    dataset: Path, split: str, classes: str | None, reduce_zero_label: bool, *, bg_thresh: float | None,
    json_out: Path | None, device: str | None,
):  # fmt: skip
    """The VOC-layout data set, after the cheap refusals (threshold, --json, --device)."""
    from zeroseg.data.voc import VOCDataset
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
    if device not in (None, "auto"):
        resolve_device(device)
    data = VOCDataset(dataset, split, classes, reduce_zero_label=reduce_zero_label)
    if not data.has_background and not reduce_zero_label:
        typer.echo(
            f"warning: the class list has no 'background' first, so mask label 0 is scored as "
            f"{data.class_names[0]!r}; list background first, or pass --reduce-zero-label if 0 means ignore",
            err=True,
        )
    return data


def register(app: typer.Typer) -> None:
    """Add `eval` to the `zeroseg` CLI."""
    app.command("eval")(evaluate_command)
