"""`zeroseg-export aoti` and `zeroseg-export cpp-build`, registered on the `zeroseg-export` app.

zeroseg-export aoti CKPT --out DIR [--short-side N] [--dynamic] [--portable] [--labels L]
    [--labels-file F] [--max-side N] [--force] [--tolerance T] [--threads N]
zeroseg-export cpp-build [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `aoti` and `cpp-build` commands to `app`.

    Args:
        app: the `zeroseg-export` Typer app.
    """

    @app.command("aoti")
    def aoti_command(
        checkpoint: Path = typer.Argument(
            ..., help="ZeroSeg checkpoint (.pt), e.g. zeroseg train's model.pt, or `bundled`."
        ),
        out: Path = typer.Option(
            ..., "--out", help="Bundle folder to write (refused if it exists, unless --force)."
        ),
        short_side: int | None = typer.Option(
            None,
            "--short-side",
            help="Network input short side (default: the checkpoint's); a patch multiple.",
        ),
        dynamic: bool = typer.Option(
            False,
            "--dynamic",
            help="Dynamic batch / height / width (default: static batch 1 at a 4:3 input).",
        ),
        portable: bool = typer.Option(
            False,
            "--portable",
            help="Run on any x86-64 with AVX2 (x86-64-v3, AVX2 kernels, run-time threads).",
        ),
        labels: str | None = typer.Option(
            None, "--labels", help='Classes for vocab.npz / vocab.bin (the C++ runner): "cat,dog|puppy".'
        ),
        labels_file: Path | None = typer.Option(None, "--labels-file", help="Class file for the vocabulary."),
        max_side: int = typer.Option(
            2048, "--max-side", help="Largest input side a --dynamic package accepts."
        ),
        force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
        tolerance: float | None = typer.Option(
            None, "--tolerance", help="Gate: minimum label-map pixel agreement with PyTorch (default 0.999)."
        ),
        threads: int | None = typer.Option(
            None, "--threads", help="torch threads while compiling (a non-portable package keeps this count)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        """Compile the end-to-end segmenter with AOTInductor into segmenter.pt2, gated on parity."""
        from zeroseg.classes import parse_labels_option
        from zeroseg.errors import ZerosegError
        from zeroseg.export.aoti import AotiSettings, export_aoti
        from zeroseg.shapeworld.bundled import resolve_model_path

        if threads is not None:
            if threads < 1:
                raise ZerosegError(f"--threads must be >= 1, got {threads}")
            import torch

            torch.set_num_threads(threads)
        classes = None if labels is None and labels_file is None else parse_labels_option(labels, labels_file)
        settings = AotiSettings(
            checkpoint=resolve_model_path(checkpoint), out=out, labels=classes, short_side=short_side,
            dynamic=dynamic, portable=portable, max_side=max_side, force=force, tolerance=tolerance,
            progress=not quiet,
        )  # fmt: skip
        export_aoti(settings, log=typer.echo)

    @app.command("cpp-build")
    def cpp_build_command(
        out: Path | None = typer.Option(
            None, "--out", help="Build folder (default: a cache folder keyed by the sources and torch)."
        ),
    ) -> None:
        """Build the C++ runner (export/cpp) against this torch; prints the executable's path."""
        from zeroseg.export.cpp_build import build_runner

        typer.echo(build_runner(out, log=lambda line: typer.echo(line, err=True)))
