"""`zeroseg segment`: label PNG, overlay and JSON for each image, with a checkpoint or MaskCLIP."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.cli import options as opts
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
    labels: str | None = opts.LABELS,
    labels_file: Path | None = opts.LABELS_FILE,
    bg_thresh: float | None = opts.BG_THRESH,
    bg_prompt: bool | None = opts.BG_PROMPT,
    out: Path = typer.Option(Path("out/segment"), "--out", help="Output folder."),
    short_side: int | None = opts.SHORT_SIDE,
    head: str | None = opts.HEAD,
    method: str = opts.METHOD,
    teacher: str | None = opts.TEACHER,
    templates: str | None = opts.TEMPLATES,
    device: str | None = opts.DEVICE,
    batch_size: int = typer.Option(
        8,
        "--batch-size",
        help="Images decoded and segmented at once (memory grows with it, not with the number of images).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs in --out (an input is never overwritten)."
    ),
    engine: Path | None = opts.ENGINE,
    precision: str | None = opts.PRECISION,
    runtime: str | None = opts.RUNTIME,
    threads: int | None = opts.THREADS,
    strict_vocab: bool = opts.STRICT_VOCAB,
) -> None:
    """Segment images into the classes you name; writes <stem>_labels.png, _overlay.png and .json.

    Images are streamed (decoded, segmented, written, dropped); all inputs and outputs are checked
    before the first file is written. Existing outputs are refused without --overwrite.
    """
    from zeroseg.classes import parse_labels_option
    from zeroseg.infer.files import segment_files
    from zeroseg.text import vocabulary_policy

    classes = parse_labels_option(labels, labels_file)
    images = _check_inputs(checkpoint, images, out, method=method, engine=engine, bg_thresh=bg_thresh,
                           device=device, overwrite=overwrite)  # fmt: skip
    from zeroseg.cli.segmenters import cli_segmenter

    segmenter = cli_segmenter(
        method, checkpoint=None if engine is not None else checkpoint, teacher=teacher, templates=templates,
        device=device, short_side=short_side, head=head, engine=engine, precision=precision, runtime=runtime,
        threads=threads,
    )  # fmt: skip
    extra = {"method": method}
    if engine is not None:
        extra.update(engine=str(engine), precision=precision or "fp32")

    def report(path: Path, result) -> None:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in result.fractions().items())
        typer.echo(f"{path.name}: {shares}")

    try:
        with vocabulary_policy(strict=strict_vocab):
            written = segment_files(
                segmenter, images, classes, out, bg_thresh=bg_thresh, bg_prompt=bg_prompt,
                batch_size=batch_size, overwrite=overwrite, extra=extra, on_result=report,
            )  # fmt: skip
    except KeyboardInterrupt:
        from zeroseg.utils.console import Interrupted

        raise Interrupted(
            "interrupted: the files written so far are complete; the rest were not written"
        ) from None
    typer.echo(f"wrote {written} files to {out}")


def _check_inputs(
    checkpoint: Path, images: list[Path] | None, out: Path, *, method: str, engine: Path | None,
    bg_thresh: float | None, device: str | None, overwrite: bool,
) -> list[Path]:  # fmt: skip
    """The images to segment, after every cheap refusal (before any model loads or file is written).

    With --engine, or a baseline --method and no checkpoint, the first positional is an image too.
    """
    from zeroseg.infer.factory import BASELINES, METHODS
    from zeroseg.infer.files import plan_outputs
    from zeroseg.utils.device import resolve_device
    from zeroseg.utils.writable import ensure_writable_dir

    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    if method not in METHODS:
        raise ZerosegError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder for the outputs")
    images = list(images or [])
    if engine is not None and method != "zeroseg":
        raise ZerosegError(
            f"--engine runs an exported ZeroSeg bundle; it does not combine with --method {method}"
        )
    if (method in BASELINES and not _names_a_checkpoint(checkpoint)) or engine is not None:
        images.insert(0, checkpoint)  # no checkpoint given: the first argument is an image
    if not images:
        raise ZerosegError("no image given: zeroseg segment CHECKPOINT IMAGE... --labels ...")
    if device not in (None, "auto"):
        resolve_device(device)  # before any decoding: a bad --device is one line
    plan_outputs(images, out, overwrite=overwrite)
    ensure_writable_dir(out, "--out", create=False)
    return images


def _names_a_checkpoint(path: Path) -> bool:
    """True when a positional argument is a checkpoint rather than an image."""
    return str(path) == "bundled" or path.suffix.lower() in (".pt", ".pth", ".ckpt")


def register(app: typer.Typer) -> None:
    """Add `segment` to the `zeroseg` CLI."""
    app.command("segment")(segment)
