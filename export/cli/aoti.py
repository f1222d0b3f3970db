"""`zeroseg-export aoti` and `zeroseg-export cpp-build`: thin layers over `zeroseg.export.aoti`.

zeroseg-export aoti CKPT --out DIR [--short-side N] [--dynamic] [--portable] [--labels L]
    [--labels-file F] [--max-side N] [--force] [--tolerance T] [--threads N] [--strict-vocab]
    [--head paper|dense]
zeroseg-export cpp-build [--out DIR] [--runtime aoti|executorch]
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.export.cli import options


def aoti_command(
    checkpoint: Path = options.checkpoint_argument(),
    out: Path = options.out_option(),
    short_side: int | None = options.short_side_option(),
    dynamic: bool = typer.Option(
        False, "--dynamic", help="Dynamic batch / height / width (default: static batch 1 at a 4:3 input)."
    ),
    portable: bool = typer.Option(
        False, "--portable", help="Run on any x86-64 with AVX2 (x86-64-v3, AVX2 kernels, run-time threads)."
    ),
    labels: str | None = options.labels_option("vocab.npz / vocab.bin (the C++ runner)"),
    labels_file: Path | None = options.labels_file_option(),
    max_side: int = options.max_side_option("Largest input side a --dynamic package accepts."),
    force: bool = options.force_option(),
    tolerance: float | None = options.tolerance_option(),
    threads: int | None = options.threads_option(
        "torch threads while compiling (a non-portable package keeps this count)."
    ),
    quiet: bool = options.quiet_option(),
    strict_vocab: bool = options.strict_vocab_option(),
    head: str | None = options.head_option(),
) -> None:
    """Compile the end-to-end segmenter with AOTInductor into segmenter.pt2, gated on parity."""
    from zeroseg.bundled import resolve_model_path
    from zeroseg.errors import ZerosegError
    from zeroseg.export.aoti.export import AotiSettings, export_aoti

    if threads is not None:
        if threads < 1:
            raise ZerosegError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    settings = AotiSettings(
        checkpoint=resolve_model_path(checkpoint), out=out, labels=options.parse_labels(labels, labels_file),
        short_side=short_side, dynamic=dynamic, portable=portable, max_side=max_side, force=force,
        tolerance=tolerance, progress=not quiet, labels_file=labels_file, strict_vocab=strict_vocab,
        head=head,
    )  # fmt: skip
    export_aoti(settings, log=typer.echo)


def cpp_build_command(
    out: Path | None = typer.Option(
        None, "--out", help="Build folder (default: a cache folder keyed by the sources and the runtime)."
    ),
    runtime: str = typer.Option(
        "aoti", "--runtime", help="aoti (zeroseg_aoti, libtorch) or executorch (zeroseg_et, no libtorch)."
    ),
) -> None:
    """Build a C++ runner (AOTInductor or ExecuTorch bundles); prints the executable's path."""
    from zeroseg.export.aoti.cpp_build import build_runner

    typer.echo(
        build_runner(out, runtime=runtime.strip().lower(), log=lambda line: typer.echo(line, err=True))
    )


def register(app: typer.Typer) -> None:
    """Add the `aoti` and `cpp-build` commands to the `zeroseg-export` app."""
    app.command("aoti")(aoti_command)
    app.command("cpp-build")(cpp_build_command)
