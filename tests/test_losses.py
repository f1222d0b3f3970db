"""Each loss against a hand-computed example."""

import pytest
import torch

from zeroseg.train.losses import (
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


def test_view_patch_weights_are_pixel_shares_of_each_view() -> None:
    from zeroseg.teacher.views import view_patch_weights

    w = view_patch_weights(8, 2, grids=(1, 2))  # 4x4 patches; views: full, then 2x2 cells
    assert w.shape == (5, 16)
    assert torch.allclose(w.sum(dim=1), torch.ones(5))
    assert torch.allclose(w[0], torch.full((16,), 1 / 16))
    top_left = torch.zeros(4, 4)
    top_left[:2, :2] = 0.25
    assert torch.equal(w[1], top_left.reshape(-1))
    odd = view_patch_weights(6, 2, grids=(1, 2))  # 3x3 patches, cells of 3 px split the middle patch
    assert torch.allclose(odd[1].reshape(3, 3), torch.tensor([[4, 2, 0], [2, 1, 0], [0, 0, 0]]) / 9)


def test_seen_view_weights_renormalise_over_the_visible_patches() -> None:
    from zeroseg.train.losses import seen_view_weights

    full = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    assert seen_view_weights(full, None, 2).shape == (2, 2, 4)
    seen = seen_view_weights(full, torch.tensor([[0, 2], [3, 2]]), 2)
    assert torch.allclose(seen[0], torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert torch.allclose(seen[1], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))  # view 2 unseen: all zero


def test_region_loss_is_zero_when_segments_explain_every_cell_and_trains_the_assignment() -> None:
    from zeroseg.model.grouping import hard_softmax
    from zeroseg.train.losses import region_loss

    segments = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # 4 patches; patches 0,1 -> segment 0, patches 2,3 -> segment 1; views: full, cell A (0,1), cell B (1,2)
    weights = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]]])
    logits = torch.tensor([[[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 5.0]]], requires_grad=True)
    assignment = hard_softmax(logits, dim=-1)
    views = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.5, 0.5]]])  # full image ignored
    assert region_loss(segments, assignment, weights, views).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.tensor([[[9.0, 9.0], [0.0, 1.0], [0.5, 0.5]]])
    # cell A mixes to (1,0) but the teacher says (0,1): mean |.| = 1 over 2 cells, x m=2 -> 1
    loss = region_loss(segments, assignment, weights, wrong)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_region_term_is_weighted_into_the_total_and_needs_the_assignment() -> None:
    args = dict(
        segments=torch.randn(1, 2, 3), z=torch.randn(1, 3), views=torch.randn(1, 5, 3),
        reconstruction=None, target_patches=None, mask=None,
    )  # fmt: skip
    with pytest.raises(ValueError, match="region loss needs"):
        zeroseg_loss(**args, weights=LossWeights(region=1.0))
    plain = zeroseg_loss(**args)
    assert plain.region.item() == 0.0
    from zeroseg.teacher.views import view_patch_weights

    vw = view_patch_weights(4, 2, grids=(1, 2)).unsqueeze(0)
    terms = zeroseg_loss(
        **args, weights=LossWeights(region=2.0), assignment=torch.eye(2)[[0, 1, 1, 0]][None], view_weights=vw
    )
    assert terms.region.item() > 0
    assert terms.total.item() == pytest.approx((plain.total + 2 * terms.region).item())
