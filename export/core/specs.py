"""Every exported graph's inputs and outputs: names, dtypes and dimensions, defined once.

The exporter names the ONNX tensors and their dynamic dimensions from these specs, the manifest
records them, and the runtimes feed and read the graphs through them (nanoowl's
`get_image_encoder_input_names()`; not nanosam's names typed once in the exporter and again in the
predictor). A dimension is an int (static) or a string (dynamic, its name in the ONNX graph).

Plain Python: the torch-free runtime imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name and dims (int = static, str = dynamic)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def to_dict(self) -> dict:
        """JSON form for the manifest."""
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @property
    def dynamic(self) -> tuple[str, ...]:
        """Names of the dynamic dimensions."""
        return tuple(d for d in self.dims if isinstance(d, str))


@dataclass(frozen=True)
class GraphSpec:
    """A graph's file name and its inputs and outputs, in order."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def int8_file(self) -> str:
        """File name of the graph's int8 variant (`image_encoder.int8.onnx`)."""
        return self.file.replace(".onnx", ".int8.onnx")

    def to_dict(self) -> dict:
        """JSON form for the manifest."""
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


# names of the dynamic dimensions
BATCH, HEIGHT, WIDTH = "batch", "height", "width"
GRID_H, GRID_W = "grid_h", "grid_w"
CLASSES = "classes"
OUT_H, OUT_W = "out_height", "out_width"
PATCHES = "patches"  # grid_h * grid_w: the dense head's per-patch outputs


def image_encoder_spec(num_segments: int, embed_dim: int) -> GraphSpec:
    """pixels (B, 3, H, W) in [0, 1] -> unit segment embeddings (B, K, D), assignment (B, K, h, w)."""
    return GraphSpec(
        "image_encoder",
        "image_encoder.onnx",
        (TensorSpec("pixels", "float32", (BATCH, 3, HEIGHT, WIDTH)),),
        (
            TensorSpec("segment_embeddings", "float32", (BATCH, num_segments, embed_dim)),
            TensorSpec("assignment", "float32", (BATCH, num_segments, GRID_H, GRID_W)),
        ),
    )


def text_encoder_spec(context_length: int, embed_dim: int) -> GraphSpec:
    """token ids (C, L) int64 -> unit text embeddings (C, D)."""
    return GraphSpec(
        "text_encoder",
        "text_encoder.onnx",
        (TensorSpec("token_ids", "int64", (CLASSES, context_length)),),
        (TensorSpec("text_embeddings", "float32", (CLASSES, embed_dim)),),
    )


def segmenter_spec(num_segments: int, embed_dim: int, head: str = "paper") -> GraphSpec:
    """End to end: pixels + text (C, D) + threshold + label offset + output size -> label map.

    labels (B, H_out, W_out) int32: 0 = background, else class index + label_offset. The paper's
    head: segment_labels (B, K) int32, each segment's best class + label_offset before thresholding,
    and segment_probs (B, K) its probability. The dense head: the same per patch, (B, patches) with
    patches = grid_h * grid_w, flattened row-major (`zeroseg.infer.segmenter.name_patches`' order).
    """
    per = PATCHES if head == "dense" else num_segments
    return GraphSpec(
        "segmenter",
        "segmenter.onnx",
        (
            TensorSpec("pixels", "float32", (BATCH, 3, HEIGHT, WIDTH)),
            TensorSpec("text_embeddings", "float32", (CLASSES, embed_dim)),
            TensorSpec("bg_thresh", "float32", ()),
            TensorSpec("label_offset", "int64", ()),
            TensorSpec("output_size", "int64", (2,)),
        ),
        (
            TensorSpec("labels", "int32", (BATCH, OUT_H, OUT_W)),
            TensorSpec("segment_labels", "int32", (BATCH, per)),
            TensorSpec("segment_probs", "float32", (BATCH, per)),
        ),
    )


def all_specs(
    num_segments: int, embed_dim: int, context_length: int, head: str = "paper"
) -> dict[str, GraphSpec]:
    """The bundle's three graphs by name (the segmenter's with `head`'s outputs)."""
    specs = (
        image_encoder_spec(num_segments, embed_dim),
        text_encoder_spec(context_length, embed_dim),
        segmenter_spec(num_segments, embed_dim, head),
    )
    return {s.name: s for s in specs}


def segmenter_feed(
    pixels: np.ndarray, text: np.ndarray, bg_thresh: float, label_offset: int, size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The input dict of `segmenter.onnx` for one batch, in the spec's dtypes."""
    names = segmenter_spec(0, 0).input_names
    values = (
        np.ascontiguousarray(pixels, dtype=np.float32),
        np.ascontiguousarray(text, dtype=np.float32),
        np.asarray(bg_thresh, dtype=np.float32),
        np.asarray(label_offset, dtype=np.int64),
        np.asarray(size, dtype=np.int64),
    )
    return dict(zip(names, values, strict=True))
