"""`zeroseg segment-dataset`: a folder, tar shards or a list file of images, in-process or on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.errors import ZerosegError


def segment_dataset(
    sources: list[str] = typer.Argument(
        None,
        help="A folder of images (recursive), .tar shards (or a glob of them), or a text file with one "
        "image path per line.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (label PNGs, JSONs, index.jsonl)."),
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="ZeroSeg checkpoint (.pt), or 'bundled' for the bundled ShapeWorld model."
    ),
    engine: Path | None = typer.Option(
        None, "--engine", help="An exported ONNX bundle (zeroseg-export onnx) instead of a checkpoint."
    ),
    precision: str = typer.Option("fp32", "--precision", help="With --engine: fp32 | int8."),
    labels: str | None = typer.Option(
        None, "--labels", help='Classes: "cat,dog,sofa|couch" (| joins synonyms).'
    ),
    labels_file: Path | None = typer.Option(
        None, "--labels-file", help="Class file: one class per line, synonyms comma-separated."
    ),
    bg_thresh: float | None = typer.Option(
        None, "--bg-thresh", help="Background below this probability (default: the model's tuned value)."
    ),
    bg_prompt: bool | None = typer.Option(
        None, "--bg-prompt/--no-bg-prompt", help="Also name 'background' through the text side."
    ),
    short_side: int | None = typer.Option(None, "--short-side", help="Network input short side."),
    device: str = typer.Option("cpu", "--device", help="With --checkpoint: cpu | cuda | auto."),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Run on Ray: 'local' (a loopback cluster on this machine), 'auto' (the cluster `ray start` "
        "runs here) or an address (ray://head:10001). Without it: in this process, no Ray.",
    ),
    actors: int | None = typer.Option(
        None, "--actors", help="With --ray: actor pool size (default: one per CPU)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per segmenter call (and per Ray task)."),
    resume: bool = typer.Option(
        False, "--resume", help="Finish a previous run in --out: skip complete images, redo partial ones."
    ),
) -> None:
    """Segment a data set into <image>_labels.png + <image>.json each (as zeroseg segment) and index.jsonl.

    Unreadable images become failed rows of the index (with the reason), never the end of the run.
    """
    from zeroseg.classes import parse_labels_option
    from zeroseg.serve.cluster import check_address
    from zeroseg.serve.dataset import segment_dataset as run
    from zeroseg.serve.model import ModelSpec
    from zeroseg.utils.console import Interrupted
    from zeroseg.utils.device import resolve_device

    if not sources:
        raise ZerosegError(
            "no SOURCE given: zeroseg segment-dataset FOLDER|SHARDS|LIST --out DIR --labels ..."
        )
    if out is None:
        raise ZerosegError("--out is required: the folder for the label PNGs, JSONs and index.jsonl")
    classes = parse_labels_option(labels, labels_file)
    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if batch_size <= 0:
        raise ZerosegError(f"--batch-size must be positive, got {batch_size}")
    if actors is not None and ray is None:
        raise ZerosegError("--actors sizes a Ray actor pool: pass --ray local (or a cluster address) too")
    if actors is not None and actors <= 0:
        raise ZerosegError(f"--actors must be positive, got {actors}")
    if ray is not None:
        ray = check_address(ray)
    resolve_device(device)
    spec = ModelSpec.from_options(
        checkpoint, engine, precision=precision, short_side=short_side, device=device
    )
    try:
        summary = run(
            spec, sources, out, classes, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size,
            ray_address=ray, actors=actors, resume=resume, log=typer.echo,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: the images written so far are complete; rerun with --resume to finish {out}"
        ) from None
    typer.echo(
        f"segmented {summary.done} images in {summary.seconds:.1f} s ({summary.images_per_s:.2f} images/s), "
        f"skipped {summary.skipped} already complete, {summary.failed} failed; wrote {summary.index}"
    )
    if summary.failed:
        typer.echo(
            f"warning: {summary.failed} of {summary.total} failed (status and error in {summary.index})"
        )


def register(app: typer.Typer) -> None:
    """Add `segment-dataset` to the `zeroseg` CLI."""
    app.command("segment-dataset")(segment_dataset)
