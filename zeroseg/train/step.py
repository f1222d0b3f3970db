"""One training step of the ZeroSeg student: the forward, the losses and the backward.

`train_step` is what `zeroseg.train.loop` runs per (micro-)batch and what the golden test and the
training benchmark call directly; `Objective` holds how a batch is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zeroseg.model.student import StudentOutput, ZeroSegStudent
from zeroseg.preprocess import Preprocess, normalize
from zeroseg.train.losses import LossTerms, LossWeights, seen_view_weights, zeroseg_loss


def groups_used(assignment: torch.Tensor) -> float:
    """Mean number of distinct segments that own at least one patch, per image (collapse shows here)."""
    owners = assignment.argmax(dim=-1)
    return float(torch.stack([o.unique().numel() * torch.ones(()) for o in owners]).mean())


@dataclass(frozen=True)
class Objective:
    """How a batch is scored: the loss weights and options of `zeroseg_loss`, the normalisation of
    the input and the autocast dtype (None: float32)."""

    preprocess: Preprocess
    weights: LossWeights
    match_mode: str = "paper"
    norm_pix: bool = False
    region_weights: torch.Tensor | None = None  # (views, patches), `view_patch_weights`
    amp_dtype: torch.dtype | None = None


def train_step(
    net: torch.nn.Module,
    model: ZeroSegStudent,
    images01: torch.Tensor,
    views: torch.Tensor,
    objective: Objective,
    *,
    loss_scale: float = 1.0,
) -> tuple[LossTerms, StudentOutput]:
    """One forward and backward pass of a (micro-)batch; the optimizer step is the caller's.

    Args:
        net: what runs the forward (the student, or its DDP / compiled wrapper).
        model: the student itself (for `patchify`).
        images01: (B, 3, S, S) centre crops in [0, 1].
        views: (B, V, E) unit-norm teacher features of the batch's grid views.
        objective: the loss and its settings.
        loss_scale: the loss is multiplied by it before backward (1 / gradient accumulation).

    Returns:
        The loss terms (unscaled) and the student's output.
    """
    x = normalize(images01, objective.preprocess)
    amp = objective.amp_dtype
    with torch.autocast(images01.device.type, dtype=amp, enabled=amp is not None):
        out = net(x)
        view_weights = None
        if objective.region_weights is not None:
            view_weights = seen_view_weights(objective.region_weights, out.visible, images01.shape[0])
        terms = zeroseg_loss(
            segments=out.segments.float(),
            z=out.z.float(),
            views=views,
            reconstruction=None if out.reconstruction is None else out.reconstruction.float(),
            target_patches=model.patchify(x),
            mask=out.mask,
            weights=objective.weights,
            match_mode=objective.match_mode,
            norm_pix=objective.norm_pix,
            assignment=out.assignment.float(),
            view_weights=view_weights,
        )
    (terms.total * loss_scale).backward()
    return terms, out
