"""The 200 answer of `POST /segment` (`zeroseg.serve.web.protocol` describes the whole contract): a
result's labels as the label PNG `zeroseg segment` writes or as row-major runs, its class shares, the
palette that colours it, the head that painted it and the time it took; and the labels read back.

Plain functions without Ray; `zeroseg.serve.web.protocol` re-exports them.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from zeroseg.infer.labels import SegmentationResult
from zeroseg.infer.visualize import encode_label_png, label_ids_from_png, label_png_bits, voc_palette

#: The head a request gets when it names none: the paper's, the one every model offers.
DEFAULT_HEAD = "paper"


def encode_rle(labels: np.ndarray) -> dict[str, Any]:
    """Row-major run-length encoding of a label map: values and run lengths."""
    flat = np.asarray(labels).ravel()
    if flat.size == 0:
        return {"format": "rle", "shape": list(np.shape(labels)), "values": [], "lengths": []}
    starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return {
        "format": "rle",
        "shape": list(np.shape(labels)),
        "values": flat[starts].tolist(),
        "lengths": lengths.tolist(),
    }


def encode_result(
    result: SegmentationResult,
    fmt: str = "png",
    *,
    batch_size: int = 1,
    head: str = DEFAULT_HEAD,
    segment_ms: float | None = None,
) -> dict[str, Any]:
    """The 200 body of a segmented image (see the module docstring).

    Args:
        result: the segmenter's result.
        fmt: png (base64 of the label PNG `zeroseg segment` writes) or rle.
        batch_size: how many requests were segmented in the same batch.
        head: the head that painted it.
        segment_ms: how long the segmenter's call for that batch took.

    Returns:
        The JSON-able response.
    """
    names = list(result.class_names)
    height, width = result.labels.shape
    if fmt == "rle":
        labels = encode_rle(result.labels)
    else:
        data = encode_label_png(result.labels, num_labels=len(names))
        labels = {
            "format": "png",
            "bits": label_png_bits(len(names)),
            "data": base64.b64encode(data).decode(),
        }
    return {
        "size": [width, height],
        "class_names": names,
        "fractions": result.fractions(),
        "labels": labels,
        "palette": voc_palette(len(names)).tolist(),
        "head": head,
        "batch_size": int(batch_size),
        "segment_ms": None if segment_ms is None else round(float(segment_ms), 3),
    }


def decode_labels(labels: dict[str, Any]) -> np.ndarray:
    """The (H, W) class ids of a response's `labels` (either format): what a client does."""
    if labels.get("format") == "rle":
        values = np.asarray(labels["values"], dtype=np.int64)
        lengths = np.asarray(labels["lengths"], dtype=np.int64)
        return np.repeat(values, lengths).reshape(labels["shape"])
    with Image.open(io.BytesIO(base64.b64decode(labels["data"]))) as img:
        return label_ids_from_png(np.asarray(img))
