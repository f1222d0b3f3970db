"""`zeroseg pretrain-teacher`: train ShapeWorld's tiny CLIP teacher from generated captions."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from zeroseg.errors import ZerosegError


def pretrain_teacher_command(
    out: Path = typer.Option(..., "--out", help="Teacher file to write (use it with --teacher OUT)."),
    seconds: float = typer.Option(90.0, "--seconds", help="Wall-time budget when --steps is not given."),
    steps: int | None = typer.Option(None, "--steps", help="Exact number of steps (reproducible)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Captioned images per contrastive batch."),
    lr: float = typer.Option(5e-4, "--lr", help="AdamW learning rate."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the model and of the generated batches."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing teacher file at --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an open_clip CLIP on ShapeWorld captions; report held-out zero-shot accuracy."""
    import torch

    from zeroseg.shapeworld.teacher import TinyClipConfig, pretrain_teacher, save_pretrained_teacher
    from zeroseg.utils.atomic import atomic_write_json
    from zeroseg.utils.writable import ensure_writable_file

    if steps is not None and steps <= 0:
        raise ZerosegError(f"--steps must be positive, got {steps}")
    if out.suffix != ".pt":
        raise ZerosegError(f"--out should end in .pt, got {out}")
    for value, flag in ((seconds, "--seconds"), (lr, "--lr")):
        if not math.isfinite(value) or value <= 0:
            raise ZerosegError(f"{flag} must be a positive number, got {value}")
    if batch_size <= 1:
        raise ZerosegError(f"--batch-size must be at least 2 (a contrastive batch), got {batch_size}")
    ensure_writable_file(out, "--out")
    if out.exists() and not overwrite:
        raise ZerosegError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    torch.manual_seed(seed)
    cfg = TinyClipConfig()
    model, report = pretrain_teacher(
        seconds=seconds, steps=steps, batch_size=batch_size, lr=lr, seed=seed, cfg=cfg, progress=not quiet
    )
    save_pretrained_teacher(out, model, cfg)
    atomic_write_json(out.with_suffix(".json"), {"teacher": str(out), **report.__dict__})
    typer.echo(report.summary())
    typer.echo(f"wrote {out} (use: --teacher {out})")


def register(app: typer.Typer) -> None:
    """Add `pretrain-teacher` to the `zeroseg` CLI."""
    app.command("pretrain-teacher")(pretrain_teacher_command)
