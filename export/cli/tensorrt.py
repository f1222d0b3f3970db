"""`zeroseg-export trt`: a thin layer over `zeroseg.export.tensorrt.export.export_trt`.

zeroseg-export trt CKPT|BUNDLE --out DIR [--precision fp32|fp16|int8] [--min-shape B,H,W]
    [--opt-shape B,H,W] [--max-shape B,H,W] [--workspace MB] [--timing-cache F]
    [--hardware-compat none|ampere+] [--version-compatible] [--calib DIR] [--onnx-only] [--force]
    [--head paper|dense]
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.export.cli import options


def trt_command(
    source: Path = options.checkpoint_argument(
        "ZeroSeg checkpoint (.pt), `bundled`, or a zeroseg-export onnx bundle."
    ),
    out: Path = options.out_option("Engine folder"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (written into the graph)."),
    min_shape: str | None = typer.Option(None, "--min-shape", help="Profile min B,H,W (default 1,S,S)."),
    opt_shape: str | None = typer.Option(None, "--opt-shape", help="Profile opt B,H,W (default 1,S,4S/3)."),
    max_shape: str | None = typer.Option(None, "--max-shape", help="Profile max B,H,W (default 8,2S,2S)."),
    workspace: int = typer.Option(4096, "--workspace", help="Builder workspace limit in MiB."),
    timing_cache: Path | None = typer.Option(None, "--timing-cache", help="Timing cache to load and save."),
    hardware_compat: str = typer.Option("none", "--hardware-compat", help="none | ampere+ (Ampere+ GPUs)."),
    version_compatible: bool = typer.Option(
        False, "--version-compatible", help="Runs on later TensorRT 11.x runtimes (can be slower)."
    ),
    calib: Path | None = options.calib_option("--precision int8"),
    onnx_only: bool = typer.Option(
        False, "--onnx-only", help="Write the TensorRT-ready graph, parity and trtexec line; no build."
    ),
    force: bool = options.force_option(),
    threads: int | None = options.threads_option("ONNX Runtime threads for the parity check."),
    quiet: bool = options.quiet_option(),
    head: str | None = options.head_option(
        "default: the source's own (a bundle's, a checkpoint's recorded one, else paper); runs in PyTorch"
    ),
) -> None:
    """Build a TensorRT 11 engine of the image encoder (+ engine.json), in-process."""
    from zeroseg.bundled import resolve_model_path
    from zeroseg.export.tensorrt.export import TrtSettings, export_trt
    from zeroseg.export.tensorrt.profiles import parse_shape

    shapes = {
        flag: None if text is None else parse_shape(flag, text)
        for flag, text in (("--min-shape", min_shape), ("--opt-shape", opt_shape), ("--max-shape", max_shape))
    }
    settings = TrtSettings(
        source=resolve_model_path(source), out=out, precision=precision.strip().lower(),
        min_shape=shapes["--min-shape"], opt_shape=shapes["--opt-shape"], max_shape=shapes["--max-shape"],
        workspace_mb=workspace,
        timing_cache=timing_cache, hardware_compat=hardware_compat.strip().lower(),
        version_compatible=version_compatible, calib=calib, onnx_only=onnx_only, force=force, threads=threads,
        progress=not quiet, head=head,
    )  # fmt: skip
    export_trt(settings, log=typer.echo)


def register(app: typer.Typer) -> None:
    """Add the `trt` command to the `zeroseg-export` app."""
    app.command("trt")(trt_command)
