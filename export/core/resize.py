"""The runtime's image preprocessing in numpy: PyTorch's antialiased bicubic resize, ported.

`zeroseg.Segmenter` resizes [0, 1] float images with `F.interpolate(mode="bicubic",
antialias=True, align_corners=False)` and clamps to [0, 1] (`zeroseg.preprocess.resize_tensor`). The
torch-free runtime must feed the graphs the same pixels, so this is a port of that kernel (PyTorch's
`_upsample_bicubic2d_aa`, itself Pillow's resampling): separable, the width pass first, per output
index the taps within `support = 2 * max(scale, 1)` of its centre weighted by Keys' cubic
(a = -0.5) stretched by the scale when downsampling, normalised to sum 1, taps outside the image
dropped. Weights are computed in float32 in PyTorch's order of operations and the taps are summed
in order, as gathered rows (the width pass on the transposed image), without BLAS: numpy's BLAS
threads spin after a call and would steal the cores ONNX Runtime is about to use. The result
matches PyTorch to ~1e-6 (tests/test_export_reference.py), far below a pixel level (1/255).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

_A = np.float32(-0.5)  # Keys' cubic, as PyTorch's antialiased bicubic (and Pillow) use


def _cubic(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    near = ((_A + 2) * x - (_A + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _A
    return np.where(x < 1, near, np.where(x < 2, far, np.float32(0))).astype(np.float32)


@functools.lru_cache(maxsize=64)
def resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (n_out, taps) of one axis; padded taps have weight 0.

    Args:
        n_in: input length.
        n_out: output length.

    Returns:
        (indices int64, weights float32), both (n_out, taps).
    """
    scale = np.float32(n_in) / np.float32(n_out)
    support = np.float32(2.0) * scale if scale >= 1 else np.float32(2.0)
    invscale = np.float32(1.0) / scale if scale >= 1 else np.float32(1.0)
    centers = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5))
    xmin = np.maximum((centers - support + np.float32(0.5)).astype(np.int64), 0)
    xmax = np.minimum((centers + support + np.float32(0.5)).astype(np.int64), n_in)
    taps = int((xmax - xmin).max())
    j = np.arange(taps, dtype=np.int64)
    idx = xmin[:, None] + j[None, :]
    valid = j[None, :] < (xmax - xmin)[:, None]
    w = _cubic((idx.astype(np.float32) - centers[:, None] + np.float32(0.5)) * invscale)
    w = np.where(valid, w, np.float32(0))
    total = w.sum(axis=1, dtype=np.float32, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1), w).astype(np.float32)
    return np.minimum(idx, n_in - 1), w


def _resize_width(x: np.ndarray, n_out: int) -> np.ndarray:
    """(3, H, W) -> (3, H, n_out): on the transpose, the taps' columns are contiguous rows."""
    c, h, w = x.shape
    idx, wt = resize_taps(w, n_out)
    xt = np.ascontiguousarray(x.reshape(c * h, w).T)  # (W, 3H)
    acc = xt[idx[:, 0]] * wt[:, 0, None]
    for t in range(1, idx.shape[1]):
        acc += xt[idx[:, t]] * wt[:, t, None]
    return np.ascontiguousarray(acc.T).reshape(c, h, n_out)


def _resize_height(x: np.ndarray, n_out: int) -> np.ndarray:
    """(3, H, W) -> (3, n_out, W): the taps' rows gathered and summed in order."""
    idx, w = resize_taps(x.shape[1], n_out)
    acc = x[:, idx[:, 0], :] * w[None, :, 0, None]
    for t in range(1, idx.shape[1]):
        acc += x[:, idx[:, t], :] * w[None, :, t, None]
    return acc


def resize_unit(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bicubic resize of (3, H, W) float32 [0, 1] pixels to `size` (H, W), clamped.

    Args:
        x: float32 pixels (3, H, W) in [0, 1].
        size: output (height, width).

    Returns:
        float32 (3, height, width); the input itself when the size already matches (as PyTorch).
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = x
    if out.shape[2] != size[1]:
        out = _resize_width(out, size[1])
    if out.shape[1] != size[0]:
        out = _resize_height(out, size[0])
    return np.clip(out, 0.0, 1.0, out=out)


def to_unit_array(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 (3, H, W) in [0, 1] (`zeroseg.data.images.to_unit_tensor` in numpy)."""
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def preprocess_images(images: list[Image.Image], size: tuple[int, int]) -> np.ndarray:
    """RGB images -> pixels (B, 3, H, W) float32 in [0, 1] at the network input `size`."""
    return np.stack([resize_unit(to_unit_array(img), size) for img in images])
