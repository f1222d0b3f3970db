"""GroupViT grouping blocks: learnable group tokens that pull image tokens into segments.

ZeroSeg "builds upon GroupViT" for its segmentation head; the paper gives no more detail, so this
module follows GroupViT's released design (Xu et al., CVPR 2022): an MLP-Mixer step projects the
incoming group tokens to the new count, a cross-attention block lets them look at the image tokens,
and a single-head *assign attention* gives every image token to exactly one group
(straight-through hard Gumbel-softmax in training, hard argmax at eval). Inference composes the
stages' hard assignments and upsamples them into pixel masks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class Assignment(NamedTuple):
    """Token-to-group assignment of one grouping block, shape (B, N_tokens, N_groups).

    hard: one-hot rows (straight-through gradients in training).
    """

    hard: torch.Tensor


def hard_softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the argmax along `dim`, with the softmax's gradient (straight-through)."""
    soft = logits.softmax(dim)
    index = soft.argmax(dim, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(dim, index, 1.0)
    return hard - soft.detach() + soft


class CrossAttention(nn.Module):
    """Multi-head attention from `query` tokens to `key` tokens (keys double as values)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        b, nq, c = query.shape
        nk = key.shape[1]
        h = self.num_heads
        q = self.q(query).reshape(b, nq, h, c // h).transpose(1, 2)
        k, v = self.kv(key).reshape(b, nk, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class CrossAttnBlock(nn.Module):
    """Pre-norm cross-attention + MLP with a final LayerNorm (GroupViT's `post_norm=True`)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        x = query + self.attn(self.norm_q(query), self.norm_k(key))
        x = x + self.mlp(self.norm_mlp(x))
        return self.norm_post(x)


class AssignAttention(nn.Module):
    """Single-head attention in which every image token picks one group.

    The logits are (B, G, N); the softmax runs over the *groups* axis, so each image token's
    column is a distribution over groups. Each group's output is the mean of the values of the
    tokens it received (GroupViT's `assign_eps=1` keeps empty groups finite).
    """

    def __init__(self, dim: int, *, hard: bool = True, gumbel: bool = True, gumbel_tau: float = 1.0) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.hard = hard
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        #: training only: plain softmax assignments (set by `set_soft_assignment`; never saved)
        self.soft = False
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _assign(self, logits: torch.Tensor) -> torch.Tensor:
        if self.soft and self.training:  # a soft warm-up (`set_soft_assignment`): no noise, no argmax
            return logits.softmax(dim=-2)
        if self.gumbel and self.training:
            return F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=self.hard, dim=-2)
        if self.hard:
            return hard_softmax(logits, dim=-2)
        return logits.softmax(dim=-2)

    def forward(self, groups: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, Assignment]:
        logits = (self.q(groups) @ self.k(tokens).transpose(-2, -1)) * self.scale  # (B, G, N)
        attn = self._assign(logits)
        weights = attn / (attn.sum(dim=-1, keepdim=True) + 1.0)
        out = self.proj(weights @ self.v(tokens))
        return out, Assignment(hard=attn.transpose(1, 2))


class GroupingBlock(nn.Module):
    """Merge N image tokens into `num_output_groups` segment tokens (GroupViT `GroupingBlock`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_group_tokens: int,
        num_output_groups: int,
        *,
        hard: bool = True,
        gumbel: bool = True,
        gumbel_tau: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.mlp_inter = Mlp(num_group_tokens, int(0.5 * dim), num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads)
        self.assign = AssignAttention(dim, hard=hard, gumbel=gumbel, gumbel_tau=gumbel_tau)
        self.norm_new_x = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, 4 * dim, dim)

    def forward(self, x: torch.Tensor, group_tokens: torch.Tensor) -> tuple[torch.Tensor, Assignment]:
        """x (B,N,C), group_tokens (B,G,C) -> segments (B,G_out,C) and the (B,N,G_out) assignment."""
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        projected = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        projected = self.norm_post_tokens(projected)
        projected = self.pre_assign_attn(projected, x)
        new_x, assignment = self.assign(projected, x)
        new_x = new_x + projected
        new_x = new_x + self.mlp_channels(self.norm_new_x(new_x))
        return new_x, assignment


class GroupProjector(nn.Module):
    """Project the previous stage's group tokens to this stage's count (GroupViT `group_projector`)."""

    def __init__(self, dim: int, num_prev: int, num_new: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(num_prev, int(0.5 * dim), num_new)

    def forward(self, prev_groups: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(prev_groups).transpose(1, 2)).transpose(1, 2)


def set_soft_assignment(model: nn.Module, soft: bool) -> None:
    """Switch every grouping stage of `model` between soft assignments (a plain softmax over the
    groups, no Gumbel noise and no argmax: smooth training dynamics) and its configured hard ones.

    Only training reads the switch (`zeroseg train --soft-assign`, a warm-up of the recipe); in eval
    mode every stage assigns hard, as inference always does.
    """
    for module in model.modules():
        if isinstance(module, AssignAttention):
            module.soft = soft
