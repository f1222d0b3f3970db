"""Teacher loading (all spec forms), grid views and batched view encoding on tiny random CLIPs."""

from __future__ import annotations

import open_clip
import pytest
import torch
from tiny_clip import TINY_CFG, tiny_clip

from zeroseg.errors import ZerosegError
from zeroseg.preprocess import resize_tensor
from zeroseg.teacher.clip import check_grids, grid_boxes, grid_views, num_views, view_boxes
from zeroseg.teacher.load import load_teacher, save_teacher


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "tiny.pt"
    save_teacher(path, tiny_clip(), name="tiny")
    return path


@pytest.fixture(scope="module")
def teacher(teacher_file):
    return load_teacher(str(teacher_file))


@pytest.mark.parametrize("size", [7, 10, 31, 64, 224, 225])
@pytest.mark.parametrize("grid", [1, 2, 3, 4, 5])
def test_grid_cells_tile_the_image_exactly(size, grid):
    if grid > size:
        pytest.skip("grid larger than image")
    cover = torch.zeros(size, size, dtype=torch.int32)
    boxes = grid_boxes(size, grid)
    assert len(boxes) == grid * grid
    for top, left, h, w in boxes:
        assert h >= size // grid and w >= size // grid
        cover[top : top + h, left : left + w] += 1
    assert torch.all(cover == 1)


def test_grid_boxes_are_row_major_and_rounded():
    assert grid_boxes(10, 3) == [
        (r, c, h, w) for r, h in ((0, 3), (3, 4), (7, 3)) for c, w in ((0, 3), (3, 4), (7, 3))
    ]
    with pytest.raises(ZerosegError):
        grid_boxes(3, 4)


def test_check_grids():
    assert check_grids([4, 1, 3, 2]) == (1, 2, 3, 4)
    assert num_views((1, 2, 3, 4)) == 30
    for bad in ([0, 1], [1, -2], [1, 1, 2], [2, 3], [], ["x"]):
        with pytest.raises(ZerosegError):
            check_grids(bad)


def test_views_count_and_order():
    size = 24
    rows = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1).expand(2, 3, size, size) / size
    cols = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size).expand(2, 3, size, size) / size
    img = (rows + 2 * cols) / 3  # every pixel distinct, in [0,1)
    views = grid_views(img, (1, 2, 3, 4), out_size=size)
    assert views.shape == (2, 30, 3, size, size)
    assert torch.equal(views[:, 0], img)  # 1x1 first, untouched at the same size
    boxes = view_boxes(size, (1, 2, 3, 4))
    expected = [(0, 0, 12, 12), (0, 12, 12, 12), (12, 0, 12, 12), (12, 12, 12, 12)]
    assert boxes[1:5] == expected  # then 2x2 row-major
    assert boxes[5] == (0, 0, 8, 8) and boxes[14] == (0, 0, 6, 6) and boxes[-1] == (18, 18, 6, 6)
    for v, (top, left, h, w) in enumerate(boxes):
        want = resize_tensor(img[:, :, top : top + h, left : left + w], (size, size))
        torch.testing.assert_close(views[:, v], want)


def test_batched_encode_equals_one_view_at_a_time(teacher):
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    feats = teacher.encode_views(images, (1, 2, 3, 4))
    assert feats.shape == (3, 30, teacher.embed_dim)
    views = grid_views(images, (1, 2, 3, 4), teacher.image_size)
    for b in range(3):
        for v in range(30):
            single = teacher.encode_images(views[b, v : v + 1])
            torch.testing.assert_close(feats[b, v : v + 1], single, atol=1e-5, rtol=0)
    torch.testing.assert_close(teacher.encode_views(images, max_batch=7), feats, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3, 30))


def test_encode_uses_teacher_mean_std(teacher_file):
    model = tiny_clip()
    t = load_teacher(str(teacher_file))
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(t.mean).view(1, 3, 1, 1)
    std = torch.tensor(t.std).view(1, 3, 1, 1)
    model.requires_grad_(False)
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image((x - mean) / std), dim=-1)
    torch.testing.assert_close(t.encode_images(x), want, atol=1e-6, rtol=0)


def test_teacher_file_roundtrip_and_fingerprint(tmp_path, teacher_file, teacher):
    assert (teacher.image_size, teacher.embed_dim) == (64, 64)
    assert (
        teacher.fingerprint.startswith("tiny@")
        and teacher.fingerprint == load_teacher(str(teacher_file)).fingerprint
    )
    assert teacher.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert all(not p.requires_grad for p in teacher.model.parameters()) and not teacher.model.training
    other = tmp_path / "other.pt"
    save_teacher(other, tiny_clip(seed=1), name="tiny", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    t2 = load_teacher(str(other))
    assert t2.fingerprint != teacher.fingerprint and t2.mean == (0.5, 0.5, 0.5)
    loaded = torch.load(other, weights_only=True)
    assert loaded["format"] == "zeroseg-teacher" and loaded["version"] == 1


def test_teacher_file_with_avg_pool_and_explicit_cfg(tmp_path):
    vision = {**TINY_CFG["vision_cfg"], "pool_type": "avg", "patch_size": 8}
    model = tiny_clip(vision_cfg=vision)
    x = torch.rand(2, 3, 64, 64)
    for i, cfg in enumerate((None, {**TINY_CFG, "vision_cfg": vision})):
        path = tmp_path / f"avg{i}.pt"
        save_teacher(path, model, model_cfg=cfg)
        t = load_teacher(str(path))
        assert t.model.visual.pool_type == "avg"
        model.requires_grad_(False)
        with torch.no_grad():
            torch.testing.assert_close(t.model.encode_image(x), model.encode_image(x), atol=0, rtol=0)


def test_text_encoder_of_teacher_is_bit_identical(teacher):
    enc = teacher.text_encoder()
    tokens = enc.tokenize(["a photo of a cat.", "a diagram"])
    assert torch.equal(enc(tokens), teacher.model.encode_text(tokens))
    assert enc.logit_scale == pytest.approx(teacher.logit_scale)


def test_model_colon_path_loads_local_open_clip_weights(tmp_path):
    model = open_clip.create_model("ViT-S-32-alt")  # smallest built-in ViT config (~42M params)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    t = load_teacher(f"ViT-S-32-alt:{path}")
    assert (t.name, t.image_size, t.embed_dim, t.tokenizer_name) == ("ViT-S-32-alt", 224, 256, "ViT-S-32-alt")
    model.eval().requires_grad_(False)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(t.model.encode_image(x), model.encode_image(x))
    with pytest.raises(ZerosegError, match="cannot load teacher"):
        load_teacher(f"ViT-B-16:{path}")  # wrong architecture for these weights


def test_model_colon_tag_uses_open_clip_and_forces_quick_gelu(monkeypatch):
    calls = {}

    def fake_create_model(name, pretrained=None, **kwargs):
        calls.update(name=name, pretrained=pretrained, **kwargs)
        model = tiny_clip()
        open_clip.set_model_preprocess_cfg(
            model, {"size": (64, 64), "mean": (0.1, 0.2, 0.3), "std": (1, 1, 1)}
        )
        return model

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    t = load_teacher("ViT-B-32:openai")
    assert calls["pretrained"] == "openai" and calls["force_quick_gelu"] is True
    assert t.model_cfg["quick_gelu"] is True and t.mean == (0.1, 0.2, 0.3) and t.tokenizer_name == "ViT-B-32"


def test_tag_download_failure_says_how_to_get_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ZerosegError, match=r"download them from .* pass ViT-B-32:/path/to/file") as info:
        load_teacher("ViT-B-32:openai")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("", "no teacher given"),
        ("ViT-Q-99:openai", "unknown teacher model .* ViT-L-14"),
        ("nonsense", "unknown teacher model"),
        ("ViT-B-32", "needs weights: pass ViT-B-32:TAG"),
        ("ViT-B-32:nosuchtag", "unknown pretrained tag .* openai"),
        ("ViT-B-32:/no/such/file.pt", "teacher weights not found"),
        ("/no/such/teacher.pt", "teacher file not found"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, pattern):
    with pytest.raises(ZerosegError, match=pattern) as info:
        load_teacher(spec)
    assert "\n" not in str(info.value)


def test_broken_and_foreign_teacher_files(tmp_path, teacher_file):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ZerosegError, match="cannot read teacher file"):
        load_teacher(str(junk))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ZerosegError, match="not a zeroseg teacher file"):
        load_teacher(str(foreign))
    damaged = torch.load(teacher_file, weights_only=True)
    damaged["state_dict"].pop("visual.proj")
    torch.save(damaged, tmp_path / "damaged.pt")
    with pytest.raises(ZerosegError, match="damaged"):
        load_teacher(str(tmp_path / "damaged.pt"))
