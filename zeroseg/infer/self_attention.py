"""The last-block surgeries of the self-self attention baselines: ClearCLIP, SCLIP and NACLIP.

Three training-free successors of MaskCLIP change only CLIP's last image block, and all three
replace its query-key attention, which mixes every patch towards the global content, by an
attention between a patch and the patches that *look like it*:

* **ClearCLIP** — Lan et al., "ClearCLIP: Decomposing CLIP Representations for Dense
  Vision-Language Inference" (ECCV 2024): query-query attention, softmax(q qᵀ / √d) v, and the
  block's residual connection and feed-forward network dropped (the residual carries the global
  content that makes MaskCLIP's maps noisy).
* **SCLIP** — Wang et al., "SCLIP: Rethinking Self-Attention for Dense Vision-Language Inference"
  (ECCV 2024): correlative self-attention, (softmax(q qᵀ / √d) + softmax(k kᵀ / √d)) v; the
  residual kept, the feed-forward network dropped.
* **NACLIP** — Hajimiri et al., "Pay Attention to Your Neighbours: Training-Free Open-Vocabulary
  Semantic Segmentation" (WACV 2025): key-key attention plus a Gaussian window on the patch grid
  (σ = 5 patches, added to the logits: each patch attends to its neighbourhood), softmax(k kᵀ / √d
  + ω) v; the residual and the feed-forward network dropped ("reduced" architecture).

`last_block` applies one of them to the tokens entering the last block; the tower's `ln_post` and
`proj` follow in `DenseTower`. The surgery keeps the block's own projections, heads, LayerScale
and open_clip's extras (head scale, inner norm, ln_attn) so it runs on any tower MaskCLIP runs on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the surgeries `last_block` knows, by the name of their paper's method
SELF_SELF_MODES: tuple[str, ...] = ("clearclip", "sclip", "naclip")
#: NACLIP's Gaussian window: its standard deviation in patches (the paper's default)
NACLIP_SIGMA = 5.0


def _projections(attn: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (N, L, D) of y = ln_1(x) through the block's own input projection."""
    d = y.shape[-1]
    if attn.in_proj_weight is not None:
        bias = attn.in_proj_bias
        q, k, v = F.linear(y, attn.in_proj_weight, bias).split(d, dim=-1)
        return q, k, v
    biases = (None,) * 3 if attn.in_proj_bias is None else attn.in_proj_bias.split(d)
    weights = (attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight)
    q, k, v = (F.linear(y, w, b) for w, b in zip(weights, biases, strict=True))
    return q, k, v


def gaussian_window(grid: tuple[int, int], sigma: float, num_prefix: int, device) -> torch.Tensor:
    """NACLIP's additive logits (L, L): exp(-|p_i - p_j|² / 2σ²) between patch positions on the
    (gh, gw) grid, zero for rows and columns of prefix (class) tokens."""
    ys, xs = torch.meshgrid(
        torch.arange(grid[0], device=device, dtype=torch.float32),
        torch.arange(grid[1], device=device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    window = torch.exp(-torch.cdist(pos, pos).square() / (2.0 * sigma**2))
    return F.pad(window, (num_prefix, 0, num_prefix, 0))


def _weights(mode: str, q: torch.Tensor, k: torch.Tensor, window: torch.Tensor | None) -> torch.Tensor:
    """Attention weights (N, h, L, L) of one surgery from per-head q, k (N, h, L, dh)."""
    scale = q.shape[-1] ** -0.5
    if mode == "clearclip":
        return torch.softmax(q @ q.transpose(-1, -2) * scale, dim=-1)
    if mode == "sclip":
        qq = torch.softmax(q @ q.transpose(-1, -2) * scale, dim=-1)
        return qq + torch.softmax(k @ k.transpose(-1, -2) * scale, dim=-1)
    return torch.softmax(k @ k.transpose(-1, -2) * scale + window, dim=-1)


def self_self_attention(
    block: nn.Module, y: torch.Tensor, mode: str, grid: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """The block's attention branch with `mode`'s self-self weights, on y = ln_1(x) (N, L, D).

    Returns ls_1(ln_attn(out_proj(ln_inner(head_scale · (weights @ v))))) with the extras the block
    has, i.e. what the block would add to its residual stream.
    """
    attn = block.attn
    n, length, d = y.shape
    heads = attn.num_heads
    q, k, v = (t.view(n, length, heads, d // heads).transpose(1, 2) for t in _projections(attn, y))
    window = (
        gaussian_window(grid, NACLIP_SIGMA, num_prefix, y.device).to(y.dtype) if mode == "naclip" else None
    )
    out = _weights(mode, q, k, window) @ v  # (N, h, L, dh)
    if not isinstance(attn, nn.MultiheadAttention) and attn.head_scale is not None:
        out = out * attn.head_scale.view(1, heads, 1, 1)
    out = out.transpose(1, 2).reshape(n, length, d)
    if not isinstance(attn, nn.MultiheadAttention):  # open_clip.transformer.Attention
        out = attn.ln_inner(out)
    out = attn.out_proj(out)
    if hasattr(block, "ln_attn"):
        out = block.ln_attn(out)
    return block.ls_1(out)


def last_block(
    block: nn.Module, x: torch.Tensor, mode: str, grid: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """The last block under `mode`'s surgery on tokens x (N, L, D): SCLIP keeps the residual,
    ClearCLIP and NACLIP drop it; all three drop the feed-forward network."""
    out = self_self_attention(block, block.ln_1(x), mode, grid, num_prefix)
    return x + out if mode == "sclip" else out
