"""`zeroseg-export executorch`: a thin layer over `zeroseg.export.executorch`.

zeroseg-export executorch CKPT --out DIR [--int8 [--calib DIR]] [--short-side N] [--labels L]
    [--labels-file F] [--head paper|dense] [--max-output-side N] [--max-classes N] [--force]
    [--tolerance T] [--int8-tolerance T] [--threads N] [--strict-vocab] [--aspects 4:3,3:4,1:1]
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.export.cli import options


def executorch_command(
    checkpoint: Path = options.checkpoint_argument(),
    out: Path = options.out_option(),
    short_side: int | None = options.short_side_option(),
    int8: bool = typer.Option(
        False, "--int8", help="Also write segmenter.int8.pte (PT2E static int8 with XNNPACK's quantizer)."
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="Images to calibrate --int8 on (default: 64 ShapeWorld scenes)."
    ),
    labels: str | None = options.labels_option("vocab.npz / vocab.bin (the C++ runner)"),
    labels_file: Path | None = options.labels_file_option(),
    max_output_side: int | None = typer.Option(
        None, "--max-output-side", help="Largest output side the program labels (default 2048; dense 1024)."
    ),
    max_classes: int | None = typer.Option(
        None, "--max-classes", help="Most classes per call, background included (default 1024; dense 32)."
    ),
    force: bool = options.force_option(),
    tolerance: float | None = options.tolerance_option(),
    int8_tolerance: float | None = typer.Option(
        None, "--int8-tolerance", help="int8 pixel-agreement gate (default 0.98)."
    ),
    threads: int | None = options.threads_option("torch threads while exporting and calibrating."),
    quiet: bool = options.quiet_option(),
    strict_vocab: bool = options.strict_vocab_option(),
    head: str | None = options.head_option(),
    aspects: str = typer.Option(
        "4:3,3:4,1:1", "--aspects", help="Image aspects W:H, one static method each (4:3 at 256 -> 256x344)."
    ),
) -> None:
    """Lower the end-to-end segmenter to ExecuTorch (XNNPACK) as segmenter.pte, gated on parity."""
    from zeroseg.bundled import resolve_model_path
    from zeroseg.errors import ZerosegError
    from zeroseg.export.executorch.export import ExecuTorchSettings, export_executorch, parse_aspects

    if threads is not None:
        if threads < 1:
            raise ZerosegError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    settings = ExecuTorchSettings(
        checkpoint=resolve_model_path(checkpoint), out=out, labels=options.parse_labels(labels, labels_file),
        short_side=short_side, int8=int8, calib=calib, max_output_side=max_output_side,
        max_classes=max_classes, force=force, tolerance=tolerance, int8_tolerance=int8_tolerance,
        progress=not quiet, labels_file=labels_file, strict_vocab=strict_vocab, head=head,
        aspects=parse_aspects(aspects),
    )  # fmt: skip
    export_executorch(settings, log=typer.echo)


def register(app: typer.Typer) -> None:
    """Add the `executorch` command to the `zeroseg-export` app."""
    app.command("executorch")(executorch_command)
