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

import torch
import torch.nn.functional as F
from torch import nn


def _counts(h: int, w: int, size: int) -> tuple[int, int]:
    """Windows per column and per row: the grid's sides rounded up to whole windows."""
    return (h + size - 1) // size, (w + size - 1) // size


def _window_order(h: int, w: int, size: int, device: torch.device) -> torch.Tensor:
    """((nW+1)*size*size,) the grid token at each window slot (window-major, then row-major inside
    a window), h*w where the slot is padding beyond the grid; the last window is all padding.

    Flat index arithmetic and gathers only (no pad, crop or broadcast of the grid's sides), and
    never a single window (the padding one makes two): a graph exported from one grid size stays
    valid at every other, down to one window.
    """
    nh, nw = _counts(h, w, size)
    slot = torch.arange((nh * nw + 1) * size * size, device=device)
    window, inside = slot // (size * size), slot % (size * size)
    r = (window // nw) * size + inside // size
    c = (window - (window // nw) * nw) * size + inside % size  # no % by a traced size: ONNX lacks it
    return torch.where((r < h) & (c < w), r * w + c, h * w)


def _grid_order(h: int, w: int, size: int, device: torch.device) -> torch.Tensor:
    """(h*w,) the window slot of each grid token (row-major): the inverse of `_window_order`."""
    _, nw = _counts(h, w, size)
    token = torch.arange(h * w, device=device)
    r = token // w
    c = token - r * w
    return ((r // size) * nw + c // size) * (size * size) + (r % size) * size + c % size


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
    count, slots = nh * nw + 1, size * size  # + the padding window (`_window_order`)
    order = _window_order(h, w, size, x.device)

    def to_windows(t: torch.Tensor) -> torch.Tensor:  # (B,H,h*w,D) -> (B*count,H,slots,D), padding zero
        t = torch.cat([t, t.new_zeros(b, heads, 1, t.shape[-1])], dim=2).index_select(2, order)
        return t.reshape(b, heads, count, slots, -1).transpose(1, 2).reshape(b * count, heads, slots, -1)

    def with_globals(t: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        shared = (
            shared.unsqueeze(1).expand(-1, count, -1, -1, -1).reshape(b * count, heads, -1, shared.shape[-1])
        )
        return torch.cat([to_windows(t), shared], dim=2)

    # padding slots are never attended to, except in the padding window (its output is dropped)
    window = torch.arange(count, device=x.device).repeat_interleave(slots)
    keys = ((order < h * w) | (window == count - 1)).reshape(count, slots)
    mask = torch.cat([keys, keys.new_ones(count, prefix + suffix)], dim=1).repeat(b, 1)[:, None, None]
    local = F.scaled_dot_product_attention(
        to_windows(qg), with_globals(kg, ks), with_globals(vg, vs), attn_mask=mask
    )
    local = local.reshape(b, count, heads, slots, -1).transpose(1, 2).reshape(b, heads, count * slots, -1)
    local = local.index_select(2, _grid_order(h, w, size, x.device))
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
