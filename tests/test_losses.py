"""Each loss against a hand-computed example."""

import pytest
import torch

from zeroseg.losses import (
    LossWeights,
    distillation_loss,
    reconstruction_loss,
    segment_matching_loss,
    zeroseg_loss,
)


def test_distillation_sums_mean_l1_over_all_views() -> None:
    z = torch.tensor([[0.0, 0.0]])
    views = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]]])
    # per view mean |z - v|: 1, 1, 0.5 -> sum 2.5
    assert distillation_loss(z, views).item() == pytest.approx(2.5)


def test_segment_matching_paper_excludes_full_image_and_is_not_one_to_one() -> None:
    views = torch.tensor([[[0.0, 0.0], [4.0, 4.0], [10.0, 10.0]]])  # v1 (full) would be nearest
    segments = torch.tensor([[[1.0, 1.0], [3.0, 5.0]]])
    # g1 -> v2: mean(|1-4|,|1-4|) = 3 (v1 excluded, although closer); g2 -> v2: mean(1,1) = 1
    assert segment_matching_loss(segments, views, "paper").item() == pytest.approx(4.0)


def test_segment_matching_two_way_adds_the_reverse_term() -> None:
    views = torch.tensor([[[0.0, 0.0], [4.0, 4.0], [10.0, 10.0]]])
    segments = torch.tensor([[[1.0, 1.0], [3.0, 5.0]]])
    # forward: 3 + 1 = 4. backward: v2 -> g2 = 1, v3 -> g2 = mean(7,5)=6 -> mean 3.5, x m=2 -> 7
    assert segment_matching_loss(segments, views, "two-way").item() == pytest.approx(0.5 * (4 + 7))


def test_matching_rejects_unknown_mode_and_missing_cells() -> None:
    with pytest.raises(ValueError, match="unknown match mode"):
        segment_matching_loss(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2), "hungarian")
    with pytest.raises(ValueError, match="grid views"):
        segment_matching_loss(torch.zeros(1, 2, 2), torch.zeros(1, 1, 2))


def test_reconstruction_scores_only_masked_patches() -> None:
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]])
    target = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    # masked patches: mse 1 and 2 -> mean 1.5; the unmasked one (error 0 anyway) is ignored
    assert reconstruction_loss(pred, target, mask).item() == pytest.approx(1.5)
    mask_only_second = torch.tensor([[0.0, 1.0, 0.0]])
    assert reconstruction_loss(pred, target, mask_only_second).item() == 0.0


def test_norm_pix_normalises_each_target_patch() -> None:
    target = torch.tensor([[[1.0, 3.0]]])  # mean 2, var 2 -> (-1/sqrt2, 1/sqrt2)
    pred = torch.tensor([[[-(2**-0.5), 2**-0.5]]])
    assert reconstruction_loss(pred, target, torch.ones(1, 1), norm_pix=True).item() == pytest.approx(
        0, abs=1e-5
    )


def test_total_is_the_weighted_sum_and_gradients_reach_segments() -> None:
    segments = torch.randn(2, 8, 4, requires_grad=True)
    z = torch.randn(2, 4, requires_grad=True)
    views = torch.randn(2, 30, 4)
    pred, target, mask = torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.ones(2, 5)
    terms = zeroseg_loss(
        segments=segments,
        z=z,
        views=views,
        reconstruction=pred,
        target_patches=target,
        mask=mask,
        weights=LossWeights(2.0, 3.0, 0.5),
    )
    expected = 2 * terms.distill + 3 * terms.match + 0.5 * terms.reconstruction
    assert terms.total.item() == pytest.approx(expected.item())
    terms.total.backward()
    assert segments.grad.abs().sum() > 0 and z.grad.abs().sum() > 0
