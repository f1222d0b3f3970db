"""Windowed self-attention for the student's transformer blocks, with shared global tokens.

The student trains at one small square input (ShapeWorld: 128 px, a 16 × 16 patch grid), where
every block attends over the whole grid. At a larger short side global attention grows with the
square of the tokens (4,096 at 512 px): most of the student's inference time. Cutting the grid
into windows of the *training* grid's size gives every patch the context it was trained with and
makes the cost linear in the pixels, like MaskCLIP's sliding windows (Swin, Liu et al., ICCV 2021;
ViTDet's window blocks, Li et al., ECCV 2022).

Tokens outside the grid (the encoder's class token, the grouping stage's group tokens) stay
global: every window's queries also attend to them, and their own queries attend to every token.
At a grid no larger than the window this is exactly the block's full attention, so a model trained
at its training size needs no retraining to run windowed at larger ones: `StudentConfig.attn_window`
is an inference-time setting of the same weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _counts(h: int, w: int, size: int) -> tuple[int, int]:
    """Windows per column and per row: the grid's sides rounded up to whole windows."""
    return (h + size - 1) // size, (w + size - 1) // size


def _layout(
    h: int, w: int, size: int, shared: int, arange: Callable, where: Callable, take: Callable
) -> tuple:
    """The window layout of an h x w grid, in torch or numpy (`arange`, `where`, `take` are the
    library's): (order, grid order, key mask).

    order ((nW+1)*size*size,): the grid token at each window slot (window-major, then row-major
    inside a window), h*w where the slot is padding beyond the grid; the last window is all padding.
    grid order (h*w,): the window slot of each grid token (row-major), the inverse. key mask
    (nW+1, size*size + shared) bool: which keys each window attends to: padding slots never, except
    in the padding window (its output is dropped); the shared (global) keys always.

    Flat index arithmetic and gathers only (no pad, crop or broadcast of the grid's sides, no `%` by
    a traced size: ONNX lacks it, no `cat`: PT2E's int8 quantizers annotate it), and never a single
    window (the padding one makes two): a graph exported from one grid size stays valid at every
    other, down to one window.
    """
    nh, nw = _counts(h, w, size)
    count, slots = nh * nw + 1, size * size
    slot = arange(count * slots)
    window, inside = slot // slots, slot % slots
    r = (window // nw) * size + inside // size
    c = (window - (window // nw) * nw) * size + inside % size
    order = where((r < h) & (c < w), r * w + c, h * w)
    token = arange(h * w)
    tr = token // w
    tc = token - tr * w
    grid = ((tr // size) * nw + tc // size) * slots + (tr % size) * size + tc % size
    win, column = arange(count)[:, None], arange(slots + shared)[None, :]
    picked = take(order, (win * slots + where(column < slots, column, slots - 1)).reshape(-1))
    keys = (picked.reshape(count, slots + shared) < h * w) | (win == count - 1) | (column >= slots)
    return order, grid, keys


@functools.lru_cache(maxsize=32)
def _static_layout(h: int, w: int, size: int, shared: int) -> tuple[np.ndarray, ...]:
    """`_layout` of a grid of known size, in numpy, once per size."""
    return _layout(h, w, size, shared, np.arange, np.where, lambda a, i: a[i])


def window_layout(h, w, size: int, shared: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """`_layout` as tensors on `device`. A grid of known size (Python ints: eager, or a capture at a
    static size) gets constants computed in numpy, which a capture records as constants (PT2E's int8
    preparation would otherwise turn the integer arithmetic's scalar factors into float32); a
    symbolic one (a capture with dynamic sizes) is computed in the graph."""
    if isinstance(h, int) and isinstance(w, int):
        return tuple(torch.from_numpy(a).to(device) for a in _static_layout(h, w, size, shared))
    return _layout(h, w, size, shared, functools.partial(torch.arange, device=device), torch.where,
                   lambda a, i: a.index_select(0, i))  # fmt: skip


def windowed_attention(
    attn: nn.Module, x: torch.Tensor, grid: tuple[int, int], size: int, prefix: int, suffix: int
) -> torch.Tensor:
    """timm `Attention` over x (B, prefix + h*w + suffix, C) with the h × w grid in windows of
    size × size; the prefix and suffix tokens are global (see the module docstring)."""
    b, n, c = x.shape
    h, w = grid
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    end = n - suffix

    def split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t[:, :, prefix:end], torch.cat([t[:, :, :prefix], t[:, :, end:]], dim=2)

    (qg, qs), (kg, ks), (vg, vs) = split(q), split(k), split(v)
    nh, nw = _counts(h, w, size)
    count, slots = nh * nw + 1, size * size  # + the padding window (`_layout`)
    order, grid_order, keys = window_layout(h, w, size, prefix + suffix, x.device)

    def to_windows(t: torch.Tensor) -> torch.Tensor:  # (B,H,h*w,D) -> (B*count,H,slots,D), padding zero
        t = torch.cat([t, t.new_zeros(b, heads, 1, t.shape[-1])], dim=2).index_select(2, order)
        return t.reshape(b, heads, count, slots, -1).transpose(1, 2).reshape(b * count, heads, slots, -1)

    def with_globals(t: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        shared = (
            shared.unsqueeze(1).expand(-1, count, -1, -1, -1).reshape(b * count, heads, -1, shared.shape[-1])
        )
        return torch.cat([to_windows(t), shared], dim=2)

    mask = keys.repeat(b, 1)[:, None, None]
    local = F.scaled_dot_product_attention(
        to_windows(qg), with_globals(kg, ks), with_globals(vg, vs), attn_mask=mask
    )
    local = local.reshape(b, count, heads, slots, -1).transpose(1, 2).reshape(b, heads, count * slots, -1)
    local = local.index_select(2, grid_order)
    shared = F.scaled_dot_product_attention(qs, k, v)  # the global tokens see everything
    out = torch.cat([shared[:, :, :prefix], local, shared[:, :, prefix:]], dim=2)
    out = attn.norm(out.transpose(1, 2).reshape(b, n, c))
    return attn.proj_drop(attn.proj(out))


def run_blocks(
    blocks: nn.Sequential,
    x: torch.Tensor,
    grid: tuple[int, int],
    window: int | None,
    prefix: int,
    suffix: int,
) -> torch.Tensor:
    """Run timm `Block`s over x: windowed (`windowed_attention`) when `window` is set, else each
    block's own forward (full attention). On a grid no larger than the window both are the same."""
    if window is None:
        return blocks(x)
    for block in blocks:
        y = windowed_attention(block.attn, block.norm1(x), grid, window, prefix, suffix)
        x = x + block.drop_path1(block.ls1(y))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x
