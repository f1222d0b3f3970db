"""Student network: shapes for both presets, masking, assignments, position-embedding resizing."""

import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.model.config import PRESETS, StudentConfig, student_preset
from zeroseg.model.student import ZeroSegStudent, compose_assignments, random_masking, sincos_pos_embed_2d


@pytest.fixture(scope="module")
def tiny() -> ZeroSegStudent:
    torch.manual_seed(0)
    return ZeroSegStudent(student_preset("tiny"))


@pytest.mark.parametrize("name,size", [("tiny", 128), ("base", 64)])
def test_training_forward_shapes(name: str, size: int) -> None:
    cfg = student_preset(name, image_size=size)
    model = ZeroSegStudent(cfg)
    out = model(torch.randn(2, 3, size, size))
    n = (size // cfg.patch_size) ** 2
    visible = round(n * (1 - cfg.mask_ratio))
    assert out.segments.shape == (2, 8, cfg.out_dim)
    assert out.z.shape == (2, cfg.out_dim)
    assert out.reconstruction.shape == (2, n, cfg.patch_size**2 * 3)
    assert out.mask.shape == (2, n) and int(out.mask[0].sum()) == n - visible
    assert out.assignment.shape == (2, visible, 8)
    assert out.visible.shape == (2, visible)
    assert bool((out.mask.gather(1, out.visible) == 0).all())  # the listed patches are the unmasked ones


def test_shapeworld_preset_groups_every_patch_once_without_masking() -> None:
    torch.manual_seed(0)
    cfg = student_preset("shapeworld")
    assert cfg.num_groups == (8,) and cfg.mask_ratio == 0.0
    out = ZeroSegStudent(cfg)(torch.randn(2, 3, 128, 128))
    assert out.reconstruction is None and out.mask is None and out.visible is None
    assert out.assignment.shape == (2, 256, 8)
    assert torch.allclose(out.assignment.sum(-1), torch.ones(2, 256))


def test_base_preset_is_the_papers_model() -> None:
    cfg = PRESETS["base"]
    assert (cfg.patch_size, cfg.embed_dim, cfg.depth) == (16, 768, 12)
    assert cfg.decoder_depth == 8 and cfg.seg_depth == 5
    assert cfg.group_after == (2, 4) and cfg.num_groups == (32, 8)
    assert cfg.mask_ratio == 0.6


def test_hard_assignment_is_one_hot_and_maps_sum_to_one(tiny: ZeroSegStudent) -> None:
    tiny.train()
    out = tiny(torch.randn(2, 3, 128, 128))
    hard = out.assignment
    assert torch.all((hard == 0) | (hard == 1))
    assert torch.all(hard.sum(-1) == 1)
    tiny.eval()
    seg = tiny.segment(torch.randn(1, 3, 64, 96))
    assert seg.maps.shape == (1, 8, 8, 12)
    assert torch.allclose(seg.maps.sum(1), torch.ones(1, 8, 12), atol=1e-5)
    assert seg.maps.min() >= 0
    assert set(seg.maps.unique().tolist()) <= {0.0, 1.0}  # hard argmax at eval


def test_segment_other_sizes_interpolates_position_embeddings(tiny: ZeroSegStudent) -> None:
    tiny.eval()
    a = tiny.segment(torch.randn(1, 3, 128, 128))
    b = tiny.segment(torch.randn(2, 3, 200, 136))
    assert a.segments.shape == (1, 8, 64) and b.maps.shape == (2, 8, 25, 17)


def test_segment_rejects_bad_sizes(tiny: ZeroSegStudent) -> None:
    with pytest.raises(ZerosegError, match="multiples of 8"):
        tiny.segment(torch.randn(1, 3, 100, 128))


def test_eval_is_deterministic_and_masking_is_random(tiny: ZeroSegStudent) -> None:
    tiny.eval()
    x = torch.randn(1, 3, 128, 128)
    assert torch.equal(tiny.segment(x).maps, tiny.segment(x).maps)
    keep_a, mask_a, _ = random_masking(4, 100, 0.6, torch.device("cpu"))
    assert keep_a.shape == (4, 40) and torch.all(mask_a.sum(1) == 60)
    assert not torch.equal(mask_a[0], mask_a[1])


def test_random_masking_restores_order() -> None:
    ids_keep, mask, ids_restore = random_masking(3, 16, 0.5, torch.device("cpu"))
    for b in range(3):
        assert torch.all(mask[b, ids_keep[b]] == 0)
        assert sorted(ids_restore[b].tolist()) == list(range(16))


def test_compose_assignments_chains_stages() -> None:
    a = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # 2 patches -> 3 groups
    b = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])  # 3 groups -> 2 segments
    assert torch.equal(compose_assignments([a, b]), torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))


def test_sincos_embedding_is_distinct_per_position() -> None:
    emb = sincos_pos_embed_2d(16, 3, 4)
    assert emb.shape == (12, 16)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 0


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ZerosegError, match="mask ratio"):
        StudentConfig(mask_ratio=1.0).validate()
    with pytest.raises(ZerosegError, match="multiple of patch_size"):
        StudentConfig(image_size=100).validate()
    with pytest.raises(ZerosegError, match="unknown preset"):
        student_preset("huge")
    with pytest.raises(ZerosegError, match="unknown student config keys"):
        StudentConfig.from_dict({"bogus": 1})


def test_pretrained_encoder_weights_load_from_a_local_file(tmp_path, tiny: ZeroSegStudent) -> None:
    source = ZeroSegStudent(student_preset("tiny"))
    path = tmp_path / "mae.pth"
    torch.save({"model": source.encoder.vit.state_dict()}, path)
    target = ZeroSegStudent(student_preset("tiny"))
    missing, _ = target.encoder.load_pretrained(path)
    assert missing == 0
    assert torch.equal(target.encoder.vit.pos_embed, source.encoder.vit.pos_embed)
    with pytest.raises(ZerosegError, match="not found"):
        target.encoder.load_pretrained(tmp_path / "nope.pth")
