"""The options `zeroseg segment`, `eval`, `serve` and `segment-dataset` share, declared once.

A typer `OptionInfo` is plain metadata, so one object can be the default of the same parameter in
several commands; the help text and the defaults then cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import typer

ENGINE: Path | None = typer.Option(
    None,
    "--engine",
    help="A folder any zeroseg-export command wrote (ONNX, AOTInductor, ExecuTorch, TensorRT); its "
    "format is read from its manifest. Replaces the checkpoint.",
)
PRECISION: str | None = typer.Option(
    None,
    "--precision",
    help="fp32 | int8 (an ONNX or ExecuTorch bundle exported with --int8) | a TensorRT engine's own.",
)
RUNTIME: str | None = typer.Option(
    None, "--runtime", help="For an ONNX bundle: onnxruntime (default) | openvino."
)
THREADS: int | None = typer.Option(None, "--threads", help="Intra-op threads (default: the runtime's).")
SHORT_SIDE: int | None = typer.Option(
    None, "--short-side", help="Network input short side (default: the model's; bundled 256)."
)
DEVICE: str | None = typer.Option(
    None, "--device", help="auto | cpu | cuda[:N] (default: the CPU, or an engine's own device)."
)
HEAD: str | None = typer.Option(
    None,
    "--head",
    help="ZeroSeg head: paper (the paper's) | dense (ours: per-patch naming); default the checkpoint's "
    "own (bundled: dense), else paper, or an --engine's own (the head it was exported with).",
)
METHOD: str = typer.Option(
    "zeroseg",
    "--method",
    help="zeroseg (the model) | maskclip | clearclip | sclip | naclip (training-free baselines).",
)
TEACHER: str | None = typer.Option(
    None, "--teacher", help="CLIP for a baseline --method (MODEL:/path or bundled)."
)
TEMPLATES: str | None = typer.Option(
    None,
    "--templates",
    help="baseline --method: imagenet | single | shapeworld | FILE "
    "(default: shapeworld with --teacher bundled, else imagenet).",
)
CHECKPOINT_OPTION: str | None = typer.Option(
    None, "--checkpoint", help="ZeroSeg checkpoint (.pt), or 'bundled' for the bundled ShapeWorld model."
)
LABELS: str | None = typer.Option(None, "--labels", help='Classes: "cat,dog,sofa|couch" (| joins synonyms).')
LABELS_FILE: Path | None = typer.Option(
    None, "--labels-file", help="Class file: one class per line, synonyms comma-separated."
)
BG_THRESH: float | None = typer.Option(
    None,
    "--bg-thresh",
    min=0.0,
    max=1.0,
    help="Background below this probability (default: the model's tuned value).",
)
BG_PROMPT: bool | None = typer.Option(
    None, "--bg-prompt/--no-bg-prompt", help="Also name 'background' through the text side."
)
STRICT_VOCAB: bool = typer.Option(
    False,
    "--strict-vocab",
    help="Refuse class names with words the model's vocabulary lacks (default: warn, in one line).",
)
