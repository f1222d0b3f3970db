"""The options every `zeroseg-export` command shares, defined once (each call returns a fresh Typer
option, so commands may word the help for their own output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

CHECKPOINT_HELP = "ZeroSeg checkpoint (.pt), e.g. zeroseg train's model.pt, or 'bundled' (ShapeWorld)."


def checkpoint_argument(help_text: str = CHECKPOINT_HELP) -> Any:
    """The positional CKPT (or CKPT|BUNDLE) argument."""
    return typer.Argument(..., help=help_text)


def out_option(what: str = "Bundle folder") -> Any:
    """--out: the folder to write, refused if it exists (unless --force)."""
    return typer.Option(..., "--out", help=f"{what} to write (refused if it exists, unless --force).")


def force_option() -> Any:
    """--force: replace an existing --out folder."""
    return typer.Option(False, "--force", help="Replace an existing --out folder.")


def short_side_option() -> Any:
    """--short-side: the network input short side."""
    return typer.Option(
        None, "--short-side", help="Network input short side (default: the checkpoint's); a patch multiple."
    )


def max_side_option(help_text: str = "Largest input side the graphs accept.") -> Any:
    """--max-side: the largest input side an exported graph accepts."""
    return typer.Option(2048, "--max-side", help=help_text)


def labels_option(what: str = "vocab.npz") -> Any:
    """--labels: the classes of the bundle's vocabulary."""
    return typer.Option(
        None, "--labels", help=f'Classes for {what}: "cat,dog,sofa|couch" (| joins synonyms).'
    )


def labels_file_option() -> Any:
    """--labels-file: a class file for the bundle's vocabulary."""
    return typer.Option(None, "--labels-file", help="Class file for the vocabulary (one class per line).")


def tolerance_option(default: float = 0.999) -> Any:
    """--tolerance: the parity gate's minimum label-map pixel agreement."""
    return typer.Option(
        None, "--tolerance", help=f"Gate: minimum label-map pixel agreement with PyTorch (default {default})."
    )


def calib_option(flag: str) -> Any:
    """--calib: the calibration images of an int8 export (`flag` names the option that asks for int8)."""
    return typer.Option(
        None, "--calib", help=f"Calibration images for {flag} (default: 64 ShapeWorld scenes)."
    )


def threads_option(what: str = "ONNX Runtime threads for the parity gate.") -> Any:
    """--threads."""
    return typer.Option(None, "--threads", help=what)


def strict_vocab_option() -> Any:
    """--strict-vocab: refuse --labels words the model's vocabulary lacks (default: a warning)."""
    return typer.Option(
        False, "--strict-vocab", help="Refuse --labels words the model's vocabulary lacks (default: warn)."
    )


def head_option(
    default_note: str = "default: the head the checkpoint records (bundled: dense), else paper",
) -> Any:
    """--head: the head inside the end-to-end engine, paper | dense (recorded in the manifest)."""
    return typer.Option(
        None, "--head", help=f"Head inside the engine: paper (the paper's) | dense (ours); {default_note}."
    )


def quiet_option() -> Any:
    """--quiet / -q: no progress bars."""
    return typer.Option(False, "--quiet", "-q", help="No progress bars.")


def parse_labels(labels: str | None, labels_file: Path | None) -> list[list[str]] | None:
    """--labels / --labels-file -> class entries (synonyms), or None when neither was given."""
    if labels is None and labels_file is None:
        return None
    from zeroseg.classes import parse_labels_option

    return parse_labels_option(labels, labels_file)
