"""The ONNX export of a checkpoint's graphs, and the checks of the export options.

Exporter: `torch.onnx.export(..., dynamo=True)`, torch 2.14's default, chosen deliberately: it
captures the model with `torch.export`, so dynamic batch / height / width are declared as symbolic
dims (height and width as patch x Dim, i.e. multiples of the patch) and any shape the trace would
silently specialise is an error instead of a wrong graph; the legacy TorchScript exporter is
deprecated in 2.14 and its `dynamic_axes` are only hints. The traces use batch 2 and a non-square
size unlike the positional-embedding grid, so neither the batch nor the pos-embed resampling is
specialised. Weights stay inside each .onnx unless a graph would exceed 2 GB. After the export,
the graphs' dynamic dims get the names of `zeroseg.export.io` and `onnx.checker` runs with
full_check. `zeroseg.export.bundle.export_onnx` puts the pieces together.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from zeroseg.errors import ZerosegError
from zeroseg.export import io
from zeroseg.export.graphs import ImageEncoderGraph, SegmenterGraph, TextEncoderGraph
from zeroseg.export.manifest import (
    VOCAB_NAME,
    BundleVocabulary,
    save_vocabulary,
    sha256_file,
)

DEFAULT_OPSET = 20  # torch 2.14's default; torchlib is written at 18 and opsets up to 23 export
OPSETS = range(18, 24)
_TWO_GB = 2**31 - 2**26  # a little headroom below protobuf's 2 GiB limit


@dataclass(frozen=True)
class ExportSettings:
    """What `zeroseg-export onnx` was asked for (see `cli.py` for each option)."""

    checkpoint: Path
    out: Path
    labels: list[list[str]] | None = None
    short_side: int | None = None
    max_side: int = 2048
    int8: str | None = None
    calib: Path | None = None
    opset: int = DEFAULT_OPSET
    force: bool = False
    tolerance: float | None = None
    int8_tolerance: float | None = None
    threads: int | None = None
    progress: bool = True


def check_out_folder(out: Path, force: bool) -> None:
    """Refuse an existing `out` without force, a file in its place, or a parent we cannot write."""
    if out.exists() and not out.is_dir():
        raise ZerosegError(f"--out {out} is a file; pass a folder path for the bundle")
    if out.exists() and not force:
        raise ZerosegError(f"--out {out} already exists; pass --force to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ZerosegError(f"cannot write the bundle: {parent} is a file, not a folder; pick another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ZerosegError(f"cannot write the bundle: {parent} is not writable; pick another --out")


def check_sides(short_side: int, max_side: int, patch: int) -> None:
    """Both sides positive multiples of the patch, short <= max."""
    for flag, value in (("--short-side", short_side), ("--max-side", max_side)):
        if value <= 0 or value % patch:
            raise ZerosegError(f"{flag} must be a positive multiple of the patch size {patch}, got {value}")
    if short_side > max_side:
        raise ZerosegError(f"--short-side {short_side} exceeds --max-side {max_side}")


def versions() -> dict[str, str | None]:
    """Versions of everything that shaped the graphs."""
    import onnx
    import onnxruntime

    import zeroseg

    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:
        onnxscript_version = None
    return {
        "zeroseg": zeroseg.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _name_dims(model, spec: io.GraphSpec) -> None:
    """Give the graph's inputs and outputs the spec's names of dynamic dims (and check the ranks)."""
    for values, specs in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        by_name = {v.name: v for v in values}
        for t in specs:
            value = by_name.get(t.name)
            dims = value.type.tensor_type.shape.dim if value is not None else None
            if dims is None or len(dims) != len(t.dims):
                raise ZerosegError(f"exported {spec.file}: tensor {t.name} does not match its spec {t.dims}")
            for dim, want in zip(dims, t.dims, strict=True):
                if isinstance(want, str):
                    dim.dim_param = want
                elif dim.HasField("dim_value") and dim.dim_value != want:
                    raise ZerosegError(
                        f"exported {spec.file}: {t.name} has dim {dim.dim_value}, expected {want}"
                    )


def export_graph(
    module: torch.nn.Module,
    args: tuple,
    dynamic_shapes: dict,
    spec: io.GraphSpec,
    folder: Path,
    opset: int,
) -> dict:
    """Export one wrapper with the dynamo exporter into `folder` and check it (full_check)."""
    import onnx

    path = folder / spec.file
    weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    external = weight_bytes > _TWO_GB
    quiet = _stdio.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module.eval(), args, dynamo=True, opset_version=opset, dynamic_shapes=dynamic_shapes,
                input_names=spec.input_names, output_names=spec.output_names, optimize=True, verbose=False,
            )  # fmt: skip
        except Exception as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZerosegError(f"torch.onnx.export failed for {spec.file}: {line[:300]}") from None
        model = program.model_proto
    _name_dims(model, spec)
    onnx.save_model(
        model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
        location=spec.file + ".data",
    )  # fmt: skip
    del model
    onnx.checker.check_model(str(path), full_check=True)
    files = [spec.file] + ([spec.file + ".data"] if external else [])
    return {**spec.to_dict(), "external_data": external, "files": files}


def _trace_pixels(patch: int, grid: int) -> torch.Tensor:
    """Batch 2, non-square, a grid unlike the pos-embed grid (so nothing is specialised)."""
    h, w = (5, 7) if grid != 5 else (6, 9)
    return torch.rand(2, 3, patch * h, patch * w, generator=torch.Generator().manual_seed(0))


def _pixel_dims(patch: int, max_side: int) -> dict:
    from torch.export import Dim

    cells = max(2, max_side // patch)
    return {
        0: Dim(io.BATCH, min=1, max=4096),
        2: patch * Dim(io.GRID_H, min=1, max=cells),
        3: patch * Dim(io.GRID_W, min=1, max=cells),
    }


def _classes_dim():
    from torch.export import Dim

    return Dim(io.CLASSES, min=1, max=1 << 20)


@dataclass
class GraphModules:
    """The three traceable wrappers of a checkpoint and its PyTorch text encoder (for tokenising)."""

    encoder: ImageEncoderGraph
    text: TextEncoderGraph
    segmenter: SegmenterGraph
    text_encoder: torch.nn.Module

    @classmethod
    def of(cls, ckpt) -> GraphModules:
        encoder = ImageEncoderGraph(ckpt.build_student("cpu"), ckpt.preprocess).eval()
        text_encoder = ckpt.build_text_encoder("cpu")
        segmenter = SegmenterGraph(encoder, ckpt.logit_scale).eval()
        return cls(encoder, TextEncoderGraph(text_encoder).eval(), segmenter, text_encoder)


def export_graphs(
    ckpt, modules: GraphModules, folder: Path, *, max_side: int, opset: int, progress: bool
) -> dict:
    """Export image_encoder, text_encoder and segmenter into `folder`; returns their manifest entries."""
    cfg = ckpt.student_config
    specs = io.all_specs(cfg.num_segments, cfg.out_dim, modules.text_encoder.context_length)
    pixels = _trace_pixels(cfg.patch_size, cfg.image_size // cfg.patch_size)
    pdims = _pixel_dims(cfg.patch_size, max_side)
    tokens = modules.text_encoder.tokenize(
        ["a photo of a cat.", "a dog", "the sky over a long road at night"]
    )
    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(3, cfg.out_dim, generator=gen), dim=-1)
    classes = _classes_dim()
    jobs = [
        (modules.encoder, (pixels,), {"pixels": pdims}, specs["image_encoder"]),
        (modules.text, (tokens,), {"token_ids": {0: classes}}, specs["text_encoder"]),
        (
            modules.segmenter,
            (pixels, text, torch.tensor(0.5), torch.tensor(1), torch.tensor([45, 61])),
            {"pixels": pdims, "text_embeddings": {0: classes}, "bg_thresh": None, "label_offset": None,
             "output_size": None},
            specs["segmenter"],
        ),
    ]  # fmt: skip
    entries = {}
    for module, args, dyn, spec in tqdm(
        jobs, desc="export", unit="graph", disable=not progress, file=sys.stderr
    ):
        entries[spec.name] = export_graph(module, args, dyn, spec, folder, opset)
    return entries


def vocabulary_file(text_encoder, templates, labels: list[list[str]], folder: Path) -> dict:
    """Write vocab.npz: the --labels classes plus "background", embedded by the PyTorch text tower."""
    from zeroseg.text import encode_classes

    entries = [list(e) for e in labels]
    if not any(e[0].strip().lower() == "background" for e in entries):
        entries.append(["background"])
    emb = encode_classes(text_encoder, entries, templates).numpy()
    vocab = BundleVocabulary(tuple(tuple(e) for e in entries), emb, tuple(templates))
    save_vocabulary(folder / VOCAB_NAME, vocab)
    return {"file": VOCAB_NAME, "classes": [list(e) for e in entries], "embed_dim": int(emb.shape[1])}


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the bundle folder but the manifest (sub-folders are work files)."""
    return {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"
    }


__all__ = ["ExportSettings", "GraphModules", "export_graphs", "check_out_folder", "check_sides"]
