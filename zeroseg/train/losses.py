"""ZeroSeg's three training losses, each a pure function of tensors.

Conventions (the paper writes |a - b|_1 and leaves the scale open): the L1 distance between two
embeddings is averaged over the embedding dimension, so the loss scale does not depend on the
teacher's width; sums over views and over segment tokens follow the paper's formulas; everything
is averaged over the batch.

- distillation: L = sum_k d(z, v_k) over all views, the full image included.
- segment matching ("paper"): L = sum_i min_{j>=2} d(g_i, v_j): each segment token is pulled to its
  nearest grid-cell feature (L1 nearest neighbour; the full image v_1 excluded; not one-to-one).
- segment matching ("two-way"): adds the reverse direction, every grid cell pulled to its nearest
  segment, both directions averaged and scaled to m tokens. On scenes whose grid cells are mostly
  background, the one-way loss lets every token collapse onto the background feature; the reverse
  term forbids that (see ShapeWorld notes in the README).
- reconstruction: MAE's MSE over the masked patches (optionally on per-patch normalised pixels).
- region (ours, off unless weighted): every grid cell's teacher feature against the segment tokens
  mixed by the share of the cell each segment owns under the patch->segment assignment. Matching
  never asks a segment to look like the pixels it is assigned, so a segment can own magenta patches
  yet carry a background embedding; this term ties the assignment to the names. On ShapeWorld it
  replaces the matching (`--loss-weights 1,0,1 --region-weight 1`, README: ShapeWorld findings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

MATCH_MODES: tuple[str, ...] = ("paper", "two-way")


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise mean-absolute distance: a (B,P,E), b (B,Q,E) -> (B,P,Q)."""
    return torch.cdist(a, b, p=1) / a.shape[-1]


def distillation_loss(z: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Multi-scale distillation: z (B,E) against every view feature views (B,V,E)."""
    return (z.unsqueeze(1) - views).abs().mean(dim=-1).sum(dim=1).mean()


def segment_matching_loss(segments: torch.Tensor, views: torch.Tensor, mode: str = "paper") -> torch.Tensor:
    """Match segment tokens (B,m,E) to grid-cell features views[:, 1:] (the full image excluded)."""
    if mode not in MATCH_MODES:
        raise ValueError(f"unknown match mode {mode!r}; choose one of {MATCH_MODES}")
    if views.shape[1] < 2:
        raise ValueError("segment matching needs grid views beyond the full image")
    dist = l1_distance(segments, views[:, 1:])  # (B, m, V-1)
    forward = dist.min(dim=2).values.sum(dim=1)  # each segment -> its nearest cell
    if mode == "paper":
        return forward.mean()
    m = segments.shape[1]
    backward = dist.min(dim=1).values.mean(dim=1) * m  # each cell -> its nearest segment
    return (0.5 * (forward + backward)).mean()


def region_loss(
    segments: torch.Tensor, assignment: torch.Tensor, view_weights: torch.Tensor, views: torch.Tensor
) -> torch.Tensor:
    """Cells explained by the segments they contain, scaled like the matching loss (x m).

    segments (B,m,E); assignment (B,K,m) of the K patches the head saw (one-hot rows, straight-
    through gradients); view_weights (B,V,K) share of each view's pixels per seen patch (rows sum to
    1, or to 0 for a view with no seen patch, which is skipped); views (B,V,E) the teacher features.
    The full image (views[:, 0]) is left out, as in the matching loss.
    """
    share = view_weights[:, 1:] @ assignment  # (B, V-1, m): how much of each cell each segment owns
    mixed = share @ segments  # (B, V-1, E)
    dist = (mixed - views[:, 1:]).abs().mean(dim=-1)  # (B, V-1)
    seen = (view_weights[:, 1:].sum(dim=-1) > 0).to(dist.dtype)
    per_image = (dist * seen).sum(dim=1) / seen.sum(dim=1).clamp_min(1.0)
    return (per_image * segments.shape[1]).mean()


def seen_view_weights(view_weights: torch.Tensor, visible: torch.Tensor | None, batch: int) -> torch.Tensor:
    """(V,N) view->patch pixel shares restricted to the seen patches visible (B,K): (B,V,K).

    Each row is renormalised over the seen patches, so a view counts what the head saw of it.
    """
    if visible is None:
        return view_weights.unsqueeze(0).expand(batch, -1, -1)
    seen = view_weights[:, visible].transpose(0, 1)  # (V,B,K) -> (B,V,K)
    return seen / seen.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = False
) -> torch.Tensor:
    """MAE loss: pred/target (B,N,P) patches, mask (B,N) with 1 on the masked (scored) patches."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms (the paper gives none; 1:1:1 by default, the region term off)."""

    distill: float = 1.0
    match: float = 1.0
    reconstruction: float = 1.0
    region: float = 0.0


class LossTerms(NamedTuple):
    """The weighted total and each unweighted term, for logging."""

    total: torch.Tensor
    distill: torch.Tensor
    match: torch.Tensor
    reconstruction: torch.Tensor
    region: torch.Tensor


def zeroseg_loss(
    *,
    segments: torch.Tensor,
    z: torch.Tensor,
    views: torch.Tensor,
    reconstruction: torch.Tensor | None,
    target_patches: torch.Tensor | None,
    mask: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
    match_mode: str = "paper",
    norm_pix: bool = False,
    assignment: torch.Tensor | None = None,
    view_weights: torch.Tensor | None = None,
) -> LossTerms:
    """Combine the losses; reconstruction is zero when nothing was masked, region when unweighted.

    The region term needs `assignment` (B,K,m) and `view_weights` (B,V,K) (see `region_loss`).
    """
    distill = distillation_loss(z, views)
    match = segment_matching_loss(segments, views, match_mode)
    if reconstruction is not None and target_patches is not None and mask is not None:
        rec = reconstruction_loss(reconstruction, target_patches, mask, norm_pix)
    else:
        rec = z.new_zeros(())
    total = weights.distill * distill + weights.match * match + weights.reconstruction * rec
    region = z.new_zeros(())
    if weights.region > 0:
        if assignment is None or view_weights is None:
            raise ValueError("the region loss needs the assignment and the view weights")
        region = region_loss(segments, assignment, view_weights, views)
        total = total + weights.region * region
    return LossTerms(total, distill, match, rec, region)
