"""The ONNX export of a checkpoint's graphs (and the trace inputs the other exporters share).

Exporter: `torch.onnx.export(..., dynamo=True)`, torch 2.14's default, chosen deliberately: it
captures the model with `torch.export`, so dynamic batch / height / width are declared as symbolic
dims (height and width as patch x Dim, i.e. multiples of the patch) and any shape the trace would
silently specialise is an error instead of a wrong graph; the legacy TorchScript exporter is
deprecated in 2.14 and its `dynamic_axes` are only hints. The traces use batch 2 and a non-square
size unlike the positional-embedding grid, so neither the batch nor the pos-embed resampling is
specialised. Weights stay inside each .onnx unless a graph would exceed 2 GB. After the export,
the graphs' dynamic dims get the names of `zeroseg.export.core.specs` and `onnx.checker` runs with
full_check. `zeroseg.export.onnx.bundle.export_onnx` puts the pieces together.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from zeroseg.errors import ZerosegError
from zeroseg.export.core.specs import BATCH, CLASSES, GRID_H, GRID_W, GraphSpec, all_specs
from zeroseg.export.graphs import ImageEncoderGraph, SegmenterGraph, TextEncoderGraph

DEFAULT_OPSET = 20  # torch 2.14's default; torchlib is written at 18 and opsets up to 23 export
OPSETS = range(18, 24)
_TWO_GB = 2**31 - 2**26  # a little headroom below protobuf's 2 GiB limit
#: The graphs whose attention `--fuse-attention` fuses (the text encoder's is causal: left as it is).
FUSED_GRAPHS: tuple[str, ...] = ("image_encoder", "segmenter")


@dataclass(frozen=True)
class ExportSettings:
    """What `zeroseg-export onnx` was asked for (see `zeroseg.export.cli.onnx` for each option)."""

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
    labels_file: Path | None = None  # where --labels came from (an input --out may not destroy)
    strict_vocab: bool = False
    int8_attention: str | None = None  # --int8-attention qk | qk+pv (static only; onnx/quantize.py)
    fuse_attention: bool = True  # image graphs' attention as com.microsoft.MultiHeadAttention (onnx/fuse.py)
    head: str | None = None  # the end-to-end graph's head: paper | dense (None: the checkpoint's own)


def _name_dims(model, spec: GraphSpec) -> None:
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
    spec: GraphSpec,
    folder: Path,
    opset: int,
    *,
    fuse: bool = False,
) -> dict:
    """Export one wrapper with the dynamo exporter into `folder` and check it (full_check).

    With `fuse`, its attention blocks become `com.microsoft.MultiHeadAttention` (`onnx.fuse`); the
    entry records the fused ops either way (`fused_ops`, empty when none) and the rewrite (`fusion`).
    """
    import onnx

    from zeroseg.export.onnx.fuse import fuse_attention

    path = folder / spec.file
    weight_bytes = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    external = weight_bytes > _TWO_GB
    quiet = io.StringIO()
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
    fusion = {"fused_ops": {}, "fusion": None}
    if fuse:
        model, info = fuse_attention(model)
        fusion = {"fused_ops": info["fused_ops"], "fusion": info["rewrite"]}
    _name_dims(model, spec)
    onnx.save_model(
        model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
        location=spec.file + ".data",
    )  # fmt: skip
    del model
    onnx.checker.check_model(str(path), full_check=True)
    files = [spec.file] + ([spec.file + ".data"] if external else [])
    return {**spec.to_dict(), "external_data": external, "files": files, **fusion}


def trace_pixels(patch: int, grid: int) -> torch.Tensor:
    """Batch 2, non-square, a grid unlike the pos-embed grid (so nothing is specialised)."""
    h, w = (5, 7) if grid != 5 else (6, 9)
    return torch.rand(2, 3, patch * h, patch * w, generator=torch.Generator().manual_seed(0))


def pixel_dims(patch: int, max_side: int) -> dict:
    """torch.export dims of `pixels`: batch, and height / width as patch multiples up to max_side."""
    from torch.export import Dim

    cells = max(2, max_side // patch)
    return {
        0: Dim(BATCH, min=1, max=4096),
        2: patch * Dim(GRID_H, min=1, max=cells),
        3: patch * Dim(GRID_W, min=1, max=cells),
    }


def classes_dim():
    """torch.export dim of the class count (`text_embeddings` rows, `token_ids` batch)."""
    from torch.export import Dim

    return Dim(CLASSES, min=1, max=1 << 20)


@dataclass
class GraphModules:
    """The three traceable wrappers of a checkpoint and its PyTorch text encoder (for tokenising)."""

    encoder: ImageEncoderGraph
    text: TextEncoderGraph
    segmenter: SegmenterGraph
    text_encoder: torch.nn.Module

    @classmethod
    def of(cls, ckpt, head: str | None = None) -> GraphModules:
        """The wrappers of `ckpt`, the end-to-end one with `head` ("paper" or "dense"; default the
        checkpoint's own, `CheckpointConfig.default_head`)."""
        encoder = ImageEncoderGraph(ckpt.build_student("cpu"), ckpt.preprocess).eval()
        text_encoder = ckpt.build_text_encoder("cpu")
        segmenter = SegmenterGraph(encoder, ckpt.logit_scale, head=head or ckpt.config.default_head).eval()
        return cls(encoder, TextEncoderGraph(text_encoder).eval(), segmenter, text_encoder)


def export_graphs(
    ckpt,
    modules: GraphModules,
    folder: Path,
    *,
    max_side: int,
    opset: int,
    progress: bool,
    fuse_attention: bool = True,
) -> dict:
    """Export image_encoder, text_encoder and segmenter into `folder`; returns their manifest entries.

    `fuse_attention` fuses the attention of the two image graphs; the text encoder's causal-mask
    attention is never fused (MultiHeadAttention would need the mask as an input, off the flash path).
    """
    cfg = ckpt.student_config
    specs = all_specs(
        cfg.num_segments, cfg.out_dim, modules.text_encoder.context_length, modules.segmenter.head
    )
    pixels = trace_pixels(cfg.patch_size, cfg.image_size // cfg.patch_size)
    pdims = pixel_dims(cfg.patch_size, max_side)
    tokens = modules.text_encoder.tokenize(
        ["a photo of a cat.", "a dog", "the sky over a long road at night"]
    )
    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(3, cfg.out_dim, generator=gen), dim=-1)
    classes = classes_dim()
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
        fuse = fuse_attention and spec.name in FUSED_GRAPHS
        entries[spec.name] = export_graph(module, args, dyn, spec, folder, opset, fuse=fuse)
    return entries


__all__ = [
    "ExportSettings",
    "FUSED_GRAPHS",
    "GraphModules",
    "export_graph",
    "export_graphs",
    "trace_pixels",
    "pixel_dims",
    "classes_dim",
]
