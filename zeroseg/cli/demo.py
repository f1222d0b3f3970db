"""`zeroseg demo`: a generated scene segmented by the bundled model, beside the truth and MaskCLIP."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", min=0, help="The first ShapeWorld scene to draw."),
    scenes: int = typer.Option(4, "--scenes", help="How many consecutive scenes (a row each), 1..16."),
    size: int = typer.Option(256, "--size", help="Scene side in pixels."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="ZeroSeg checkpoint (default: the bundled ShapeWorld model)."
    ),
    teacher: str | None = typer.Option(
        None, "--teacher", help="CLIP for the MaskCLIP column (default: the bundled teacher)."
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Add the MaskCLIP column."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda."),
) -> None:
    """Segment generated ShapeWorld scenes into colours: demo.png, a row per scene = input | truth |
    ZeroSeg | MaskCLIP."""
    from zeroseg.shapeworld.demo import run_demo
    from zeroseg.utils.device import resolve_device

    resolve_device(device)  # one line for cuda without a GPU
    result = run_demo(
        out, seed=seed, scenes=scenes, size=size, checkpoint=checkpoint, teacher=teacher, baseline=baseline,
        device=device,
    )  # fmt: skip
    scores = ", ".join(f"{k} {v:.3f}" for k, v in result.scores.items())
    shown = f"scene {seed}" if scenes == 1 else f"scenes {seed}-{seed + scenes - 1}"
    typer.echo(f"{shown}: mean scene mIoU {scores}")
    typer.echo(f"wrote {result.panel} (+{len(result.files) - 1} files in {out})")


def register(app: typer.Typer) -> None:
    """Add `demo` to the `zeroseg` CLI."""
    app.command("demo")(demo)
