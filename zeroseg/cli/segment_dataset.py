"""`zeroseg segment-dataset`: a folder, tar shards or a list file of images, in-process or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zeroseg.cli import options as opts
from zeroseg.errors import ZerosegError

if TYPE_CHECKING:
    from zeroseg.serve.dataset.run import Summary


def segment_dataset(
    sources: list[str] = typer.Argument(
        None,
        help="A folder of images (recursive), .tar shards (or a glob of them), or a text file with one "
        "image path per line.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (label PNGs, JSONs, _zeroseg/index.jsonl)."
    ),
    checkpoint: str | None = opts.CHECKPOINT_OPTION,
    engine: Path | None = opts.ENGINE,
    precision: str | None = opts.PRECISION,
    runtime: str | None = opts.RUNTIME,
    labels: str | None = opts.LABELS,
    labels_file: Path | None = opts.LABELS_FILE,
    bg_thresh: float | None = opts.BG_THRESH,
    bg_prompt: bool | None = opts.BG_PROMPT,
    short_side: int | None = opts.SHORT_SIDE,
    device: str | None = opts.DEVICE,
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
    """Segment a data set into <image>_labels.png + <image>.json each (as zeroseg segment) and an index.

    Unreadable images become failed rows of the index (with the reason), never the end of the run.
    """
    from zeroseg.classes import parse_labels_option
    from zeroseg.serve.dataset.run import segment_dataset as run
    from zeroseg.serve.model import ModelSpec
    from zeroseg.utils.console import Interrupted
    from zeroseg.utils.device import resolve_device

    if not sources:
        raise ZerosegError(
            "no SOURCE given: zeroseg segment-dataset FOLDER|SHARDS|LIST --out DIR --labels ..."
        )
    if out is None:
        raise ZerosegError("--out is required: the folder for the label PNGs, JSONs and _zeroseg/index.jsonl")
    classes = parse_labels_option(labels, labels_file)
    ray = _check_run_options(bg_thresh, batch_size, actors, ray)
    if device not in (None, "auto"):
        resolve_device(device)
    spec = ModelSpec.from_options(
        checkpoint, engine, precision=precision, short_side=short_side, device=device, runtime=runtime
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
    _report(summary)


def _check_run_options(
    bg_thresh: float | None, batch_size: int, actors: int | None, ray: str | None
) -> str | None:
    """Check the run's numbers and Ray options; returns the checked Ray address (None: no Ray).

    Raises:
        ZerosegError: --bg-thresh outside [0, 1], a non-positive --batch-size or --actors, --actors
            without --ray, or a malformed --ray address.
    """
    from zeroseg.serve.cluster import check_address

    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if batch_size <= 0:
        raise ZerosegError(f"--batch-size must be positive, got {batch_size}")
    if actors is not None and ray is None:
        raise ZerosegError("--actors sizes a Ray actor pool: pass --ray local (or a cluster address) too")
    if actors is not None and actors <= 0:
        raise ZerosegError(f"--actors must be positive, got {actors}")
    return check_address(ray) if ray is not None else None


def _report(summary: Summary) -> None:
    """The run's closing lines: counts, speed and the index file; a warning when images failed."""
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
