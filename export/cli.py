"""`zeroseg-export`: exporters of ZeroSeg checkpoints (a thin layer over `zeroseg.export.onnx`).

    zeroseg-export onnx CKPT --out DIR [--labels "cat,dog|puppy" | --labels-file F] [--short-side N]
        [--max-side N] [--int8 dynamic|static] [--calib DIR] [--opset N] [--force] [--tolerance T]

Bad arguments and a failed parity gate are one-line errors with exit status 2; nothing is left
half-written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.utils.console import new_app, run_app

app = new_app(
    "Export ZeroSeg checkpoints: `onnx` writes image, text and end-to-end ONNX graphs (optionally int8) "
    "with a manifest, gated on parity with PyTorch. TensorRT and AOTInductor are later issues."
)


@app.callback()
def _main() -> None:
    """Exporters of ZeroSeg checkpoints."""


@app.command("onnx")
def onnx_command(
    checkpoint: Path = typer.Argument(
        ..., help="ZeroSeg checkpoint (.pt), e.g. zeroseg train's model.pt, or 'bundled' (ShapeWorld)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Bundle folder to write (refused if it exists, unless --force)."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help='Classes for vocab.npz: "cat,dog,sofa|couch" (| joins synonyms).'
    ),
    labels_file: Path | None = typer.Option(None, "--labels-file", help="Class file for vocab.npz."),
    short_side: int | None = typer.Option(
        None, "--short-side", help="Network input short side (default: the checkpoint's); a patch multiple."
    ),
    max_side: int = typer.Option(2048, "--max-side", help="Largest input side the graphs accept."),
    int8: str | None = typer.Option(None, "--int8", help="Also write int8 graphs: dynamic | static."),
    calib: Path | None = typer.Option(
        None, "--calib", help="Calibration images for --int8 static (default: 64 ShapeWorld scenes)."
    ),
    opset: int = typer.Option(20, "--opset", help="ONNX opset (18..23)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="fp32 gate: minimum label-map pixel agreement (default 0.999)."
    ),
    int8_tolerance: float | None = typer.Option(
        None, "--int8-tolerance", help="int8 gate: minimum agreement with fp32 (default 0.98)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads for the gate."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Export image_encoder.onnx, text_encoder.onnx and segmenter.onnx (+ manifest.json, vocab.npz)."""
    from zeroseg.classes import parse_labels_option
    from zeroseg.export.bundle import export_onnx
    from zeroseg.export.onnx import ExportSettings
    from zeroseg.shapeworld.bundled import resolve_model_path

    checkpoint = resolve_model_path(checkpoint)
    classes = None if labels is None and labels_file is None else parse_labels_option(labels, labels_file)
    settings = ExportSettings(
        checkpoint=checkpoint, out=out, labels=classes, short_side=short_side, max_side=max_side,
        int8=None if int8 is None else int8.strip().lower(), calib=calib, opset=opset, force=force,
        tolerance=tolerance, int8_tolerance=int8_tolerance, threads=threads, progress=not quiet,
    )  # fmt: skip
    export_onnx(settings, log=typer.echo)


from zeroseg.export.trt_cli import trt_command  # noqa: E402 (TensorRT: export/trt_*.py)

app.command("trt")(trt_command)

from zeroseg.export.aoti_cli import register as _register_aoti  # noqa: E402 (AOTInductor, C++)

_register_aoti(app)

from zeroseg.export.triton_repo import register as _register_triton  # noqa: E402 (Triton model repository)

_register_triton(app)


def main() -> None:
    """Console entry point."""
    run_app(app)
