"""MaskCLIP's surgery on an open_clip ViT image tower: dense, projected patch features.

`DenseTower` runs the tower up to its last block and, per `mode` (see `zeroseg.infer.maskclip`),
replaces that block's attention by its value branch (`value_branch`), by a self-self attention
(ClearCLIP, SCLIP, NACLIP: `zeroseg.infer.self_attention`) or keeps the ordinary tokens,
then applies the tower's `ln_post` and `proj` to every patch token. Inputs of other sizes than the
native one get bicubically interpolated positional embeddings. `MaskCLIPSegmenter` names these
features with the text embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.errors import ZerosegError
from zeroseg.infer.self_attention import SELF_SELF_MODES, last_block

#: MaskCLIP's own modes, then the self-self attention baselines' (`zeroseg.infer.self_attention`)
MODES: tuple[str, ...] = ("v_only", "vv_res", "tokens", *SELF_SELF_MODES)


def default_mode(visual: nn.Module) -> str:
    """vv_res for a mean-pooled tower, v_only otherwise (see `zeroseg.infer.maskclip`)."""
    return "vv_res" if getattr(visual, "pool_type", "tok") == "avg" else "v_only"


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `choices`, else a one-line ZerosegError naming the MaskCLIP `what`."""
    if value not in choices:
        raise ZerosegError(f"unknown MaskCLIP {what} {value!r}: use one of {', '.join(choices)}")
    return value


def check_tower(visual: nn.Module) -> None:
    """Refuse a tower MaskCLIP cannot run: not an open_clip VisionTransformer, an attentional
    pooler (CoCa), a last block without open_clip attention, or non-square patches."""
    from open_clip.transformer import Attention, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ZerosegError(
            f"MaskCLIP needs an open_clip VisionTransformer image tower, this teacher has "
            f"{type(visual).__name__}: use a ViT CLIP"
        )
    if visual.attn_pool is not None:
        raise ZerosegError("MaskCLIP does not support attentional-pooler towers (CoCa): use a plain ViT CLIP")
    if len(visual.transformer.resblocks) == 0 or not isinstance(
        visual.transformer.resblocks[-1].attn, (nn.MultiheadAttention, Attention)
    ):
        raise ZerosegError("MaskCLIP needs the tower's last block to be an open_clip attention block")
    if visual.patch_size[0] != visual.patch_size[1]:
        raise ZerosegError(f"MaskCLIP needs square patches, this tower has {visual.patch_size}")


def value_branch(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A block's attention branch with attention replaced by the identity, on y = ln_1(x): (N, L, D).

    out_proj(W_v y + b_v), with the extras of open_clip's custom blocks (head scale, inner norm,
    ln_attn) and LayerScale (ls_1) applied where the block has them.
    """
    attn = block.attn
    d = y.shape[-1]
    weight = attn.in_proj_weight
    weight = attn.v_proj_weight if weight is None else weight[2 * d :]
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * d :]
    v = F.linear(y, weight, bias)
    if not isinstance(attn, nn.MultiheadAttention):  # open_clip.transformer.Attention
        if attn.head_scale is not None:
            n, length = v.shape[:2]
            v = (v.view(n, length, attn.num_heads, -1) * attn.head_scale.view(attn.num_heads, 1)).flatten(2)
        v = attn.ln_inner(v)
    out = attn.out_proj(v)
    if hasattr(block, "ln_attn"):
        out = block.ln_attn(out)
    return block.ls_1(out)


class DenseTower:
    """Dense features of an open_clip ViT tower with MaskCLIP's last block.

    Args:
        visual: the tower (checked by `check_tower`).
        mode: one of `MODES`; None picks it by the tower's pooling (`default_mode`).

    Raises:
        ZerosegError: a tower MaskCLIP cannot run, an unknown mode, or positional embeddings that
            are not the patch grid plus at most one class token.
    """

    def __init__(self, visual: nn.Module, mode: str | None = None) -> None:
        check_tower(visual)
        self.visual = visual
        self.mode = check_choice(default_mode(visual) if mode is None else mode, MODES, "mode")
        self.patch = int(visual.patch_size[0])
        grid_h, grid_w = (int(g) for g in visual.grid_size)
        self.native_grid = (grid_h, grid_w)
        self.num_prefix = int(visual.positional_embedding.shape[0]) - grid_h * grid_w
        if self.num_prefix not in (0, 1) or (self.num_prefix and visual.class_embedding is None):
            raise ZerosegError(
                f"cannot read the tower's positional embedding ({visual.positional_embedding.shape[0]} "
                f"rows for a {grid_h}x{grid_w} grid)"
            )
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """Positional embeddings for a (gh, gw) patch grid; the grid part resized bicubically."""
        pos = self.visual.positional_embedding
        if grid == self.native_grid:
            return pos
        key = (grid, pos.device, pos.dtype)
        if key not in self._pos_cache:
            prefix, table = pos[: self.num_prefix], pos[self.num_prefix :]
            table = table.reshape(1, *self.native_grid, -1).permute(0, 3, 1, 2).float()
            table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
            table = table.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
            self._pos_cache[key] = torch.cat([prefix, table])
        return self._pos_cache[key]

    def _run_blocks(self, x: torch.Tensor, blocks) -> torch.Tensor:
        """`blocks` on batch-first tokens (N, L, D), whatever layout the tower's blocks expect."""
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks:
            x = block(x)
        return x if batch_first else x.transpose(0, 1)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected patch features (N, h, w, E) float32 of normalised images (N, 3, H, W).

        H and W must be multiples of the patch size; other sizes than the native one use
        interpolated positional embeddings. Follows open_clip's VisionTransformer.forward (embed,
        class token, ln_pre, blocks, ln_post, proj) with the last block per `mode`; ln_post goes on
        every patch token even where the tower applies it after pooling (final_ln_after_pool).
        """
        visual = self.visual
        h, w = pixels.shape[-2:]
        if h % self.patch or w % self.patch:
            raise ZerosegError(f"input {h}x{w} is not a multiple of the patch size {self.patch}")
        x = visual.conv1(pixels.to(visual.conv1.weight.device, visual.conv1.weight.dtype))
        n, _, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        if self.num_prefix:
            cls_token = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(n, -1, -1)
            x = torch.cat([cls_token, x], dim=1)
        x = visual.ln_pre(x + self.pos_embed((gh, gw)).to(x.dtype))
        blocks = visual.transformer.resblocks
        if self.mode == "tokens":
            x = self._run_blocks(x, blocks)
        elif self.mode in SELF_SELF_MODES:
            x = self._run_blocks(x, blocks[:-1])
            x = last_block(blocks[-1], x, self.mode, (gh, gw), self.num_prefix)
        else:
            x = self._run_blocks(x, blocks[:-1])
            last = blocks[-1]
            v = value_branch(last, last.ln_1(x))
            if self.mode == "v_only":
                x = v
            else:
                x = x + v
                x = x + last.ls_2(last.mlp(last.ln_2(x)))
        x = visual.ln_post(x[:, self.num_prefix :])
        if visual.proj is not None:
            x = x @ visual.proj
        return x.float().reshape(n, gh, gw, -1)
