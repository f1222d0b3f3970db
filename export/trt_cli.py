"""`zeroseg-export trt`: the command (registered on `zeroseg.export.cli.app`), a thin layer over
`zeroseg.export.trt_export.export_trt`.

    zeroseg-export trt CKPT|BUNDLE --out DIR [--precision fp32|fp16|int8] [--min-shape B,H,W]
        [--opt-shape B,H,W] [--max-shape B,H,W] [--workspace MB] [--timing-cache F]
        [--hardware-compat none|ampere+] [--version-compatible] [--calib DIR] [--onnx-only] [--force]
"""

from __future__ import annotations

from pathlib import Path

import typer


def trt_command(
    source: Path = typer.Argument(
        ..., help="ZeroSeg checkpoint (.pt), `bundled`, or a zeroseg-export onnx bundle."
    ),
    out: Path = typer.Option(..., "--out", help="Engine folder to write (refused if it exists)."),
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
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration images for --precision int8 (default: 64 ShapeWorld scenes)."
    ),
    onnx_only: bool = typer.Option(
        False, "--onnx-only", help="Write the TensorRT-ready graph, parity and trtexec line; no build."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads for the parity check."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Build a TensorRT 11 engine of the image encoder (+ engine.json), in-process."""
    from zeroseg.export.trt_export import TrtSettings, export_trt
    from zeroseg.export.trt_profiles import parse_shape
    from zeroseg.shapeworld.bundled import resolve_model_path

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
        progress=not quiet,
    )  # fmt: skip
    export_trt(settings, log=typer.echo)
