"""`zeroseg-export onnx`: a thin layer over `zeroseg.export.onnx.bundle.export_onnx`.

zeroseg-export onnx CKPT --out DIR [--labels "cat,dog|puppy" | --labels-file F] [--short-side N]
    [--max-side N] [--int8 dynamic|static] [--calib DIR] [--opset N] [--force] [--tolerance T]
    [--strict-vocab] [--head paper|dense] [--no-fuse-attention] [--int8-attention qk|qk+pv]
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.export.cli import options


def onnx_command(
    checkpoint: Path = options.checkpoint_argument(),
    out: Path = options.out_option(),
    labels: str | None = options.labels_option(),
    labels_file: Path | None = options.labels_file_option(),
    short_side: int | None = options.short_side_option(),
    max_side: int = options.max_side_option(),
    int8: str | None = typer.Option(None, "--int8", help="Also write int8 graphs: dynamic | static."),
    calib: Path | None = options.calib_option("--int8 static"),
    opset: int = typer.Option(20, "--opset", help="ONNX opset (18..23)."),
    force: bool = options.force_option(),
    tolerance: float | None = options.tolerance_option(),
    int8_tolerance: float | None = typer.Option(
        None, "--int8-tolerance", help="int8 gate: minimum agreement with fp32 (default 0.98)."
    ),
    threads: int | None = options.threads_option(),
    quiet: bool = options.quiet_option(),
    strict_vocab: bool = options.strict_vocab_option(),
    head: str | None = options.head_option(),
    fuse_attention: bool = typer.Option(
        True,
        "--fuse-attention/--no-fuse-attention",
        help="Image graphs' attention as com.microsoft.MultiHeadAttention (ONNX Runtime's flash kernel); "
        "--no-fuse-attention keeps plain MatMul/Softmax (A/B runs, consumers without contrib ops).",
    ),
    int8_attention: str | None = typer.Option(
        None,
        "--int8-attention",
        help="With --int8 static: also quantise attention's products, qk (Q.K^T) or qk+pv (and P.V), u8 QDQ; "
        "the int8 graphs are then unfused. Without it int8 quantises the weight MatMuls only and keeps "
        "attention fused in fp32.",
    ),
) -> None:
    """Export image_encoder.onnx, text_encoder.onnx and segmenter.onnx (+ manifest.json, vocab.npz)."""
    from zeroseg.bundled import resolve_model_path
    from zeroseg.export.onnx.bundle import export_onnx
    from zeroseg.export.onnx.export import ExportSettings

    settings = ExportSettings(
        checkpoint=resolve_model_path(checkpoint), out=out, labels=options.parse_labels(labels, labels_file),
        short_side=short_side, max_side=max_side, int8=None if int8 is None else int8.strip().lower(),
        calib=calib, opset=opset, force=force, tolerance=tolerance, int8_tolerance=int8_tolerance,
        threads=threads, progress=not quiet, labels_file=labels_file, strict_vocab=strict_vocab, head=head,
        fuse_attention=fuse_attention,
        int8_attention=None if int8_attention is None else int8_attention.strip().lower(),
    )  # fmt: skip
    export_onnx(settings, log=typer.echo)


def register(app: typer.Typer) -> None:
    """Add the `onnx` command to the `zeroseg-export` app."""
    app.command("onnx")(onnx_command)
