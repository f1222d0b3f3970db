"""`zeroseg segment`: label PNG, overlay and JSON for each image, with a checkpoint or MaskCLIP."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.errors import ZerosegError

#: zeroseg.data.images.MAX_PIXELS and zeroseg.infer.labels.MAX_INFERENCE_SIDE, spelled out so that
#: `--help` imports neither (tests check they agree).
MAX_PIXELS = 268_435_456
MAX_INFERENCE_SIDE = 2048


def segment(
    checkpoint: Path = typer.Argument(
        ...,
        help="ZeroSeg checkpoint (.pt), or 'bundled' for the bundled ShapeWorld model; with --method "
        "maskclip it may be left out (every argument is then an image).",
    ),
    images: list[Path] = typer.Argument(
        None,
        help=f"Image files to segment (at most {MAX_PIXELS:,} pixels each; the network sees at most "
        f"{MAX_INFERENCE_SIDE} px on the longer side, outputs keep the image's size).",
    ),
    labels: str | None = typer.Option(
        None, "--labels", help='Classes: "cat,dog,sofa|couch" (| joins synonyms).'
    ),
    labels_file: Path | None = typer.Option(
        None, "--labels-file", help="Class file: one class per line, synonyms comma-separated."
    ),
    bg_thresh: float | None = typer.Option(
        None,
        "--bg-thresh",
        help="Background below this probability (default: the model's tuned value, else 0.5).",
    ),
    bg_prompt: bool | None = typer.Option(
        None, "--bg-prompt/--no-bg-prompt", help="Also name 'background' through the text side."
    ),
    out: Path = typer.Option(Path("out/segment"), "--out", help="Output folder."),
    short_side: int | None = typer.Option(
        None, "--short-side", help="Network input short side (default: the checkpoint's; bundled 256)."
    ),
    head: str = typer.Option(
        "segments", "--head", help="ZeroSeg head: segments (the paper's) | dense (ours: per-patch naming)."
    ),
    method: str = typer.Option("zeroseg", "--method", help="zeroseg (the checkpoint) | maskclip (baseline)."),
    teacher: str | None = typer.Option(None, "--teacher", help="CLIP for --method maskclip (MODEL:/path)."),
    templates: str | None = typer.Option(
        None,
        "--templates",
        help="--method maskclip: imagenet | single | shapeworld | FILE "
        "(default: shapeworld with --teacher bundled, else imagenet).",
    ),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(
        8,
        "--batch-size",
        help="Images decoded and segmented at once (memory grows with it, not with the number of images).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs in --out (an input is never overwritten)."
    ),
    engine: Path | None = typer.Option(
        None,
        "--engine",
        help="Run an exported ONNX bundle (zeroseg-export onnx) instead of a checkpoint; every argument "
        "is then an image.",
    ),
    precision: str = typer.Option("fp32", "--precision", help="With --engine: fp32 | int8."),
) -> None:
    """Segment images into the classes you name; writes <stem>_labels.png, _overlay.png and .json.

    Images are streamed (decoded, segmented, written, dropped); all inputs and outputs are checked
    before the first file is written. Existing outputs are refused without --overwrite.
    """
    from zeroseg.classes import parse_labels_option
    from zeroseg.infer.files import plan_outputs, segment_files
    from zeroseg.shapeworld.bundled import resolve_model_path
    from zeroseg.utils.console import Interrupted
    from zeroseg.utils.device import resolve_device
    from zeroseg.utils.writable import ensure_writable_dir

    classes = parse_labels_option(labels, labels_file)
    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    from zeroseg.infer.factory import METHODS, check_engine_head

    if method not in METHODS:
        raise ZerosegError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder for the outputs")
    images = list(images or [])
    if engine is not None and method != "zeroseg":
        raise ZerosegError(
            "--engine runs an exported ZeroSeg bundle; it does not combine with --method maskclip"
        )
    if (method == "maskclip" and not _names_a_checkpoint(checkpoint)) or engine is not None:
        images.insert(0, checkpoint)  # no checkpoint given: the first argument is an image
    if not images:
        raise ZerosegError("no image given: zeroseg segment CHECKPOINT IMAGE... --labels ...")
    resolve_device(device)  # before any decoding: a bad --device is one line
    plan_outputs(images, out, overwrite=overwrite)  # cheap refusals before the model loads
    ensure_writable_dir(out, "--out", create=False)
    if method == "zeroseg" and checkpoint is not None:
        checkpoint = resolve_model_path(checkpoint)
    extra = {"method": method}
    if engine is not None:
        check_engine_head(head, templates)
        from zeroseg.export.runtime import OnnxSegmenter

        segmenter = OnnxSegmenter(engine, precision=precision, short_side=short_side)
        extra.update(engine=str(engine), precision=precision)
    else:
        from zeroseg.cli.segmenters import cli_segmenter

        segmenter = cli_segmenter(
            method, checkpoint=checkpoint, teacher=teacher, templates=templates, device=device,
            short_side=short_side, head=head,
        )  # fmt: skip

    def report(path: Path, result) -> None:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in result.fractions().items())
        typer.echo(f"{path.name}: {shares}")

    try:
        written = segment_files(
            segmenter, images, classes, out, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size,
            overwrite=overwrite, extra=extra, on_result=report,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted: the files written so far are complete; the rest were not written"
        ) from None
    typer.echo(f"wrote {written} files to {out}")


def _names_a_checkpoint(path: Path) -> bool:
    """True when a positional argument is a checkpoint rather than an image."""
    return str(path) == "bundled" or path.suffix.lower() in (".pt", ".pth", ".ckpt")


def register(app: typer.Typer) -> None:
    """Add `segment` to the `zeroseg` CLI."""
    app.command("segment")(segment)
