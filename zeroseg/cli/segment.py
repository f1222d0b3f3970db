"""`zeroseg segment`: label PNG, overlay and JSON for each image, with a checkpoint or MaskCLIP."""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.errors import ZerosegError


def segment(
    checkpoint: Path = typer.Argument(..., help="ZeroSeg checkpoint (.pt); ignored by --method maskclip."),
    images: list[Path] = typer.Argument(..., help="Image files to segment."),
    labels: str | None = typer.Option(
        None, "--labels", help='Classes: "cat,dog,sofa|couch" (| joins synonyms).'
    ),
    labels_file: Path | None = typer.Option(None, "--labels-file", help="Class file: one class per line."),
    bg_thresh: float | None = typer.Option(None, "--bg-thresh", help="Background below this probability."),
    bg_prompt: bool | None = typer.Option(
        None, "--bg-prompt/--no-bg-prompt", help="Also name 'background' through the text side."
    ),
    out: Path = typer.Option(Path("out/segment"), "--out", help="Output folder."),
    short_side: int | None = typer.Option(
        None, "--short-side", help="Network input short side (default 448)."
    ),
    method: str = typer.Option("zeroseg", "--method", help="zeroseg (the checkpoint) | maskclip (baseline)."),
    teacher: str | None = typer.Option(None, "--teacher", help="CLIP for --method maskclip (MODEL:/path)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
) -> None:
    """Segment images into the classes you name; writes <stem>_labels.png, _overlay.png and .json."""
    from zeroseg.classes import parse_labels_option
    from zeroseg.data.images import open_rgb
    from zeroseg.infer.visualize import save_label_png, save_overlay
    from zeroseg.utils.atomic import atomic_write_json

    classes = parse_labels_option(labels, labels_file)
    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise ZerosegError(f"--bg-thresh must be in [0, 1], got {bg_thresh}")
    from zeroseg.infer.factory import METHODS, build_segmenter

    if method not in METHODS:
        raise ZerosegError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder for the outputs")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ZerosegError("two input images share a file name; their outputs would collide")
    pil = [open_rgb(p) for p in images]  # every input is checked before anything is written
    segmenter = build_segmenter(
        method, checkpoint=checkpoint, teacher=teacher, device=device, short_side=short_side
    )
    results = segmenter(pil, classes, bg_thresh=bg_thresh, bg_prompt=bg_prompt, batch_size=batch_size)
    for path, image, result in zip(images, pil, results, strict=True):
        base = out / path.stem
        save_label_png(base.with_name(f"{path.stem}_labels.png"), result.labels)
        save_overlay(
            base.with_name(f"{path.stem}_overlay.png"), image, result.labels, list(result.class_names)
        )
        atomic_write_json(
            base.with_name(f"{path.stem}.json"),
            {
                "image": str(path),
                "size": [image.width, image.height],
                "class_names": list(result.class_names),
                "fractions": result.fractions(),
                "method": method,
            },
        )
        shares = ", ".join(f"{k} {v:.0%}" for k, v in result.fractions().items())
        typer.echo(f"{path.name}: {shares}")
    typer.echo(f"wrote {3 * len(images)} files to {out}")


def register(app: typer.Typer) -> None:
    """Add `segment` to the `zeroseg` CLI."""
    app.command("segment")(segment)
