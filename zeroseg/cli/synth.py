"""`zeroseg synth`: write a ShapeWorld data set (captioned images or VOC-layout scenes)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from zeroseg.errors import ZerosegError

KINDS = ("captions", "scenes")
#: What synth writes in --out; --overwrite removes these first, so no stale item survives.
SYNTH_OUTPUTS: tuple[str, ...] = (
    "images", "JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets",
    "captions.jsonl", "annotations.jsonl", "classes.txt", "dataset.json",
)  # fmt: skip


def _remove_previous(out: Path) -> None:
    """Delete a previous synth's outputs in `out` (only the names synth writes)."""
    import shutil

    for name in SYNTH_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
    kind: str = typer.Option(
        "scenes", "--kind", help="captions: single objects + captions.jsonl; scenes: VOC layout."
    ),
    n: int = typer.Option(..., "--n", help="Number of images."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed; the same seed gives byte-identical files."),
    size: int | None = typer.Option(
        None, "--size", help="Image side in pixels (default 64 for captions, 128 for scenes)."
    ),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of items in the val split."),
    labels: str = typer.Option("colour", "--labels", help="Scene mask classes: colour | shape | both."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Write into a folder that is not empty (a previous synth's files there are removed first).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate ShapeWorld data: seeded, deterministic, numpy + PIL only."""
    from tqdm import tqdm

    from zeroseg.shapeworld.write import LABEL_SETS, write_captions, write_scenes
    from zeroseg.shapeworld.write import _check_args as check_args
    from zeroseg.utils.writable import ensure_writable_dir

    if kind not in KINDS:
        raise ZerosegError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if labels not in LABEL_SETS:
        raise ZerosegError(f"--labels must be one of {', '.join(LABEL_SETS)}, got {labels!r}")
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ZerosegError(f"output folder {out} is not empty; choose a new folder or pass --overwrite")
    check_args(n, seed, val_fraction)  # before anything is created or removed
    ensure_writable_dir(out, "--out")
    if overwrite:
        _remove_previous(out)
    start = time.perf_counter()
    with tqdm(total=n, unit="img", disable=quiet, desc=f"synth {kind}") as bar:
        if kind == "captions":
            meta = write_captions(
                out, n=n, seed=seed, size=size or 64, val_fraction=val_fraction, progress=bar.update
            )
        else:
            meta = write_scenes(
                out,
                n=n,
                seed=seed,
                size=size or 128,
                val_fraction=val_fraction,
                labels=labels,
                progress=bar.update,
            )
    seconds = time.perf_counter() - start
    extra = f", labels {labels}" if kind == "scenes" else ""
    typer.echo(
        f"wrote {n} {kind} ({meta['num_train']} train / {meta['num_val']} val, {meta['size']}px{extra}) "
        f"to {out} in {seconds:.1f} s"
    )


def register(app: typer.Typer) -> None:
    """Add `synth` to the `zeroseg` app."""
    app.command("synth")(synth)
