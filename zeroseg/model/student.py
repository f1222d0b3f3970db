"""The ZeroSeg student: a masked ViT encoder with a reconstruction decoder and a grouping head.

Training (`forward`): the encoder sees a random 40 % of the patches (MAE masking; `base` preset);
the MAE decoder reconstructs the rest; the segmentation head groups the visible tokens into 32,
then 8 segment tokens g_i; a global head turns them into z. g_i and z are projected into the
teacher's CLIP space.

Inference (`segment`): no masking; returns the segment embeddings and the composed hard (one-hot)
patch->segment assignment as maps (B, m, h, w), which the head kernels upsample into labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from timm.layers import Mlp, resample_abs_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer, checkpoint_filter_fn
from torch import nn

from zeroseg.errors import ZerosegError
from zeroseg.model.config import StudentConfig
from zeroseg.model.grouping import Assignment, GroupingBlock, GroupProjector
from zeroseg.model.window import run_blocks


class StudentOutput(NamedTuple):
    """What one training forward pass produces.

    segments (B,m,E) and z (B,E) live in the teacher's embedding space; reconstruction (B,N,p*p*3)
    predicts every patch and mask (B,N) marks the masked ones (1 = masked, reconstruct it);
    assignment (B,K,m) is the composed hard assignment of the K patches the head saw, and
    visible (B,K) their indices in the full patch grid (None when nothing was masked: all, in order).
    """

    segments: torch.Tensor
    z: torch.Tensor
    reconstruction: torch.Tensor | None
    mask: torch.Tensor | None
    assignment: torch.Tensor
    visible: torch.Tensor | None


class SegmentationOutput(NamedTuple):
    """Inference output: segment embeddings (B,m,E) and one-hot assignment maps (B,m,h,w)."""

    segments: torch.Tensor
    maps: torch.Tensor


def sincos_pos_embed_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE's decoder), shape (h*w, dim)."""
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    out_y = ys.reshape(-1, 1) * omega
    out_x = xs.reshape(-1, 1) * omega
    emb = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return emb.float()


def random_masking(
    batch: int, num_patches: int, ratio: float, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """MAE per-sample random masking: (ids_keep (B,K), mask (B,N) 1=masked, ids_restore (B,N))."""
    keep = max(1, int(round(num_patches * (1 - ratio))))
    noise = torch.rand(batch, num_patches, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    return ids_keep, mask, ids_restore


class ViTEncoder(nn.Module):
    """timm ViT with a class token, run patch-wise so that masking and any input size work."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.vit = VisionTransformer(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            num_classes=0,
            global_pool="",
            dynamic_img_size=True,
        )
        self.patch_size = cfg.patch_size
        self.window = cfg.attn_window

    def forward(
        self, images: torch.Tensor, ids_keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """images (B,3,H,W) normalised -> tokens (B,1+K,D) (class token first) and the patch grid."""
        vit = self.vit
        x = vit.patch_embed(images)  # (B, h, w, D) with dynamic_img_size
        b, h, w, d = x.shape
        pos = vit.pos_embed
        if (h, w) != tuple(vit.patch_embed.grid_size):
            pos = resample_abs_pos_embed(pos, new_size=[h, w], num_prefix_tokens=1)
        x = x.reshape(b, h * w, d) + pos[:, 1:]
        if ids_keep is not None:
            x = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        cls = (vit.cls_token + pos[:, :1]).expand(b, -1, -1)
        x = vit.norm_pre(torch.cat([cls, x], dim=1))
        window = self.window if ids_keep is None else None  # masked tokens have no grid
        x = run_blocks(vit.blocks, x, (h, w), window, prefix=1, suffix=0)
        return vit.norm(x), (h, w)

    def load_pretrained(self, path: str | Path) -> tuple[int, int]:
        """Load timm / MAE ViT weights from a local file; returns (#missing, #unexpected) keys."""
        path = Path(path)
        if not path.is_file():
            raise ZerosegError(f"encoder weights not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise ZerosegError(f"cannot read encoder weights {path}: {type(exc).__name__}") from None
        for key in ("model", "state_dict", "module"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        state = {k.removeprefix("encoder.").removeprefix("module."): v for k, v in state.items()}
        state = checkpoint_filter_fn(state, self.vit)
        result = self.vit.load_state_dict(state, strict=False)
        if len(result.missing_keys) == len(self.vit.state_dict()):
            raise ZerosegError(f"{path} holds no weights of a ViT with this config")
        return len(result.missing_keys), len(result.unexpected_keys)


class ReconstructionDecoder(nn.Module):
    """MAE decoder: mask tokens fill the gaps, transformer blocks, linear to pixels per patch."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        dim = cfg.decoder_dim
        self.embed = nn.Linear(cfg.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(
            *[Block(dim, cfg.decoder_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.decoder_depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, cfg.patch_size**2 * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.embed(tokens)
        b, n = ids_restore.shape
        fill = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        pos = sincos_pos_embed_2d(x.shape[2], *grid).to(x)
        x = torch.cat([x[:, :1], patches + pos], dim=1)
        x = self.norm(self.blocks(x))
        return self.pred(x[:, 1:])


class SegmentationHead(nn.Module):
    """Transformer layers with GroupViT grouping blocks inserted after the configured layers."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        dim = cfg.seg_dim
        self.proj_in = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, dim))
        bounds = (0, *cfg.group_after)
        self.num_groups = cfg.num_groups
        self.group_tokens = nn.ParameterList(
            [nn.Parameter(torch.randn(1, g, dim) * 0.02) for g in cfg.num_groups]
        )
        self.stage_blocks = nn.ModuleList(
            [
                nn.Sequential(
                    *[Block(dim, cfg.seg_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(end - start)]
                )
                for start, end in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        )
        self.grouping = nn.ModuleList(
            [
                GroupingBlock(dim, cfg.seg_heads, g, g, gumbel=cfg.gumbel, gumbel_tau=cfg.gumbel_tau)
                for g in cfg.num_groups
            ]
        )
        self.projectors = nn.ModuleList(
            [
                GroupProjector(dim, prev, new)
                for prev, new in zip(cfg.num_groups[:-1], cfg.num_groups[1:], strict=True)
            ]
        )
        tail = cfg.seg_depth - cfg.group_after[-1]
        self.tail = nn.Sequential(
            *[Block(dim, cfg.seg_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(tail)]
        )
        self.norm = nn.LayerNorm(dim)
        self.window = cfg.head_window

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, list[Assignment]]:
        """tokens (B,N,D) -> segment features (B,m,seg_dim) and one Assignment per grouping stage.

        grid: the patch grid of the tokens (None: no grid, e.g. masked): the first stage's blocks
        attend in windows over it when the config says so."""
        x = self.proj_in(tokens)
        b = x.shape[0]
        assignments: list[Assignment] = []
        prev_groups: torch.Tensor | None = None
        for stage, (blocks, grouping) in enumerate(zip(self.stage_blocks, self.grouping, strict=True)):
            groups = self.group_tokens[stage].expand(b, -1, -1)
            if prev_groups is not None:
                groups = groups + self.projectors[stage - 1](prev_groups)
            num = self.num_groups[stage]
            window = self.window if stage == 0 and grid is not None else None
            y = run_blocks(
                blocks, torch.cat([x, groups], dim=1), grid or (0, 0), window, prefix=0, suffix=num
            )
            x, groups = y[:, :-num], y[:, -num:]
            x, assignment = grouping(x, groups)
            prev_groups = groups
            assignments.append(assignment)
        return self.norm(self.tail(x)), assignments


def compose_assignments(assignments: list[torch.Tensor]) -> torch.Tensor:
    """Chain per-stage (B,N_in,N_out) assignments into one patch->final-segment map (B,N,m)."""
    out = assignments[0]
    for nxt in assignments[1:]:
        out = out @ nxt
    return out


class ZeroSegStudent(nn.Module):
    """ViT encoder + MAE decoder + grouping head + global head, projected to the teacher's space.

    Args:
        cfg: the architecture (`student_preset`); validated here.

    Raises:
        ZerosegError: `cfg` has inconsistent sizes.
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = ViTEncoder(cfg)
        self.decoder = ReconstructionDecoder(cfg)
        self.seg_head = SegmentationHead(cfg)
        self.segment_proj = nn.Linear(cfg.seg_dim, cfg.out_dim)
        self.global_block = Block(cfg.seg_dim, cfg.seg_heads, cfg.mlp_ratio, qkv_bias=True)
        self.global_mlp = Mlp(cfg.seg_dim, 4 * cfg.seg_dim, cfg.out_dim)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,N,p*p*3), MAE's patch order (row-major, channels last)."""
        p = self.cfg.patch_size
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, images: torch.Tensor, mask_ratio: float | None = None) -> StudentOutput:
        """Training pass: mask, encode, reconstruct, group and project.

        Args:
            images: (B, 3, H, W) normalised images, sides multiples of the patch size.
            mask_ratio: fraction of patches to mask (default: the config's; 0 masks nothing and
                skips the decoder).

        Returns:
            The `StudentOutput` (segments, z, reconstruction, mask, composed hard assignment,
            visible patch indices).
        """
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        p = self.cfg.patch_size
        num_patches = (images.shape[2] // p) * (images.shape[3] // p)
        ids_keep = mask = ids_restore = None
        if ratio > 0:
            ids_keep, mask, ids_restore = random_masking(images.shape[0], num_patches, ratio, images.device)
        tokens, grid = self.encoder(images, ids_keep)
        reconstruction = None
        if ids_restore is not None:
            reconstruction = self.decoder(tokens, ids_restore, grid)
        seg, assignments = self.seg_head(tokens[:, 1:], grid if ids_keep is None else None)
        segments = self.segment_proj(seg)
        z = self.global_mlp(self.global_block(seg).mean(dim=1))
        hard = compose_assignments([a.hard for a in assignments])
        return StudentOutput(segments, z, reconstruction, mask, hard, ids_keep)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> SegmentationOutput:
        """Inference: no masking, no decoder; segment tokens and their patch masks.

        Args:
            images: (B, 3, H, W) normalised images whose sides are multiples of the patch size.

        Returns:
            A `SegmentationOutput`: segment embeddings (B, m, E) and the one-hot patch->segment
            maps (B, m, h, w) on the patch grid (the stages' hard assignments composed).

        Raises:
            ZerosegError: the images are not (B, 3, H, W) with H, W multiples of the patch size.
        """
        p = self.cfg.patch_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % p or images.shape[3] % p:
            raise ZerosegError(f"expected (B,3,H,W) with H and W multiples of {p}, got {tuple(images.shape)}")
        tokens, (h, w) = self.encoder(images)
        seg, assignments = self.seg_head(tokens[:, 1:], (h, w))
        # hard argmax per stage (GroupViT's eval), composed: one-hot patch->segment maps. Composing
        # the soft assignments instead blurs near-uniform early stages into one dominant segment.
        hard = compose_assignments([a.hard for a in assignments])  # (B, h*w, m)
        maps = hard.transpose(1, 2).reshape(images.shape[0], -1, h, w)
        return SegmentationOutput(self.segment_proj(seg), maps)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
