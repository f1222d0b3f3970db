"""Fused bilinear upsample + argmax over maps + class lookup + background threshold, in Triton.

One program per (block of output pixels, image). The 2x2 source taps and their weights are computed
once per pixel with `F.interpolate(mode="bilinear", align_corners=False)`'s arithmetic
(src = (dst + 0.5) * (in / out) - 0.5 in fp32, clamped at 0; i0 = floor, i1 = min(i0 + 1, in - 1);
a plain copy when in == out); then a loop over the K maps keeps the running best value and map
index (strictly greater wins, so ties keep the first map). Only the label map is written: the
(B, K, H, W) upsampled maps never exist. Semantics: `reference.upsample_labels_ref`, including its
rule that a pixel whose taps touch a non-finite map value is background.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _axis_taps(o, n_in, ratio, SAME: tl.constexpr):
    """Source indices (i0, i1) and weight of i1 along one axis, for output coordinates `o`."""
    if SAME:  # same size: ATen copies (i1 = i0, weight 0), so a neighbour's NaN cannot leak in
        i0 = o
        i1 = o
        lam = tl.zeros(o.shape, tl.float32)
    else:
        src = tl.maximum((o.to(tl.float32) + 0.5) * ratio - 0.5, 0.0)
        i0 = tl.minimum(tl.floor(src).to(tl.int32), n_in - 1)
        lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
        i1 = tl.minimum(i0 + 1, n_in - 1)
    return i0, i1, lam


@triton.jit
def _upsample_labels_kernel(
    maps_ptr, table_ptr, probs_ptr, out_ptr, score_ptr,
    K, h, w, H, W,
    s_mb, s_mk, s_mh, s_mw, s_tb, s_tk, s_pb, s_pk,
    ratio_h, ratio_w, bg_thresh, bg_label,
    HAS_PROBS: tl.constexpr, WRITE_BEST: tl.constexpr, SAME_H: tl.constexpr, SAME_W: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < H * W
    oy = offs // W
    ox = offs % W
    y0, y1, ly = _axis_taps(oy, h, ratio_h, SAME_H)
    x0, x1, lx = _axis_taps(ox, w, ratio_w, SAME_W)
    wy0 = 1.0 - ly
    wx0 = 1.0 - lx
    o00 = y0 * s_mh + x0 * s_mw
    o01 = y0 * s_mh + x1 * s_mw
    o10 = y1 * s_mh + x0 * s_mw
    o11 = y1 * s_mh + x1 * s_mw

    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    best_k = tl.zeros((BLOCK,), tl.int32)
    finite = ok
    base = maps_ptr + b * s_mb
    for k in range(0, K):
        p = base + k * s_mk
        a00 = tl.load(p + o00, mask=ok, other=0.0).to(tl.float32)
        a01 = tl.load(p + o01, mask=ok, other=0.0).to(tl.float32)
        a10 = tl.load(p + o10, mask=ok, other=0.0).to(tl.float32)
        a11 = tl.load(p + o11, mask=ok, other=0.0).to(tl.float32)
        finite = finite & (tl.abs(a00) < float("inf")) & (tl.abs(a01) < float("inf"))
        finite = finite & (tl.abs(a10) < float("inf")) & (tl.abs(a11) < float("inf"))
        v = wy0 * (wx0 * a00 + lx * a01) + ly * (wx0 * a10 + lx * a11)
        better = (v > best) | (k == 0)
        best = tl.where(better, v, best)
        best_k = tl.where(better, k, best_k)

    label = tl.load(table_ptr + b * s_tb + best_k * s_tk, mask=ok, other=0)
    if HAS_PROBS:
        score = tl.load(probs_ptr + b * s_pb + best_k * s_pk, mask=ok, other=0.0)
    else:
        score = best
    keep = finite & (score >= bg_thresh)  # a NaN score compares False: background
    label = tl.where(keep, label, bg_label)
    tl.store(out_ptr + b * H * W + offs, label.to(out_ptr.dtype.element_ty), mask=ok)
    if WRITE_BEST:  # tests: the best interpolated value per pixel, to check the arithmetic
        tl.store(score_ptr + b * H * W + offs, best, mask=ok)


def is_interpreted() -> bool:
    """True when these kernels run in Triton's interpreter (TRITON_INTERPRET=1 at triton import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_upsample_labels_kernel, InterpretedFunction)


def _ratio(n_in: int, n_out: int) -> float:
    """in / out rounded to fp32, as ATen computes the scale when no scale_factor is given."""
    return float(np.float32(n_in) / np.float32(n_out))


def upsample_labels_triton(
    maps: torch.Tensor,
    class_table: torch.Tensor,
    probs: torch.Tensor | None,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    out_dtype: torch.dtype = torch.int32,
    best_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton implementation of `upsample_labels` (inputs validated, labels known to fit out_dtype).

    best_out: optional contiguous (B, H, W) float32 tensor that receives the best interpolated map
    value per pixel (used by the tests to check the interpolation against `F.interpolate`).
    """
    b, k, h, w = maps.shape
    big_h, big_w = size
    out = torch.empty((b, big_h, big_w), dtype=out_dtype, device=maps.device)
    if b == 0:
        return out
    table = class_table.to(torch.int32)
    probs32 = probs.float() if probs is not None else table  # any tensor: unused without HAS_PROBS
    block = 4096 if is_interpreted() else 1024
    grid = (triton.cdiv(big_h * big_w, block), b)
    ms = maps.stride()
    _upsample_labels_kernel[grid](
        maps, table, probs32, out, best_out if best_out is not None else out,
        k, h, w, big_h, big_w,
        ms[0], ms[1], ms[2], ms[3], table.stride(0), table.stride(1), probs32.stride(0), probs32.stride(1),
        _ratio(h, big_h), _ratio(w, big_w), float(bg_thresh), int(bg_label),
        HAS_PROBS=probs is not None, WRITE_BEST=best_out is not None, SAME_H=h == big_h, SAME_W=w == big_w,
        BLOCK=block, num_warps=4,
    )  # fmt: skip
    return out
