"""MaskCLIP baseline: the dense features reproduce open_clip's tower, the windows tile the image, and
the labels follow `Segmenter`'s label space at the image's own size."""

from __future__ import annotations

import copy
import os
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_clip import TINY_CFG, last_block_input, tiny_clip

from zeroseg.errors import ZerosegError
from zeroseg.infer.maskclip import STRATEGIES, MaskCLIPSegmenter, window_starts
from zeroseg.infer.maskclip_tower import MODES, value_branch
from zeroseg.kernels import available_backends
from zeroseg.teacher.clip import Teacher
from zeroseg.teacher.load import load_teacher, save_teacher
from zeroseg.text import Vocabulary

DEVICE = "cuda" if os.environ.get("ZEROSEG_TEST_GPU") == "1" else "cpu"
ONE_TEMPLATE = ("a photo of a {}.",)
CLASSES = ["red", "green", "blue"]


def _vision(**extra) -> dict:
    return {**TINY_CFG["vision_cfg"], "patch_size": 8, **extra}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("maskclip") / "teacher.pt"
    save_teacher(path, tiny_clip(seed=1, vision_cfg=_vision(pool_type="avg")))
    return str(path)


@pytest.fixture(scope="module")
def teacher(teacher_file) -> Teacher:
    return load_teacher(teacher_file)


@pytest.fixture(scope="module")
def vocab(teacher) -> Vocabulary:
    return _vocabulary(teacher)


# one text tower per teacher: building it (and its BPE tokenizer) is most of a segmenter's set-up
_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocabulary(teacher: Teacher) -> Vocabulary:
    if teacher not in _VOCABULARIES:
        _VOCABULARIES[teacher] = Vocabulary(teacher.text_encoder().to(teacher.device), ONE_TEMPLATE)
    return _VOCABULARIES[teacher]


def _segmenter(teacher: Teacher, **kwargs) -> MaskCLIPSegmenter:
    return MaskCLIPSegmenter(teacher, vocabulary=_vocabulary(teacher), **kwargs)


def _vision_segmenter(model, vocab: Vocabulary, **kwargs) -> MaskCLIPSegmenter:
    """For tests of the image side only (the vocabulary is another teacher's)."""
    return MaskCLIPSegmenter(_teacher_of(model), vocabulary=vocab, **kwargs)


def _teacher_of(model) -> Teacher:
    """A Teacher around an in-memory tiny model (no file needed)."""
    cfg = {**TINY_CFG, "vision_cfg": {}}  # the text side is TINY_CFG's; the vision side is not read
    return Teacher(
        model, spec="mem", name="mem", model_cfg=cfg,
        mean=(0.5,) * 3, std=(0.25,) * 3, tokenizer_name="clip", context_length=16, fingerprint="mem",
    )  # fmt: skip


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _tower_tokens(visual, x: torch.Tensor) -> torch.Tensor:
    """open_clip's own patch tokens (after ln_post) projected: (N, h, w, E)."""
    visual.output_tokens = True
    try:
        _, tokens = visual(x)
    finally:
        visual.output_tokens = False
    gh, gw = x.shape[-2] // visual.patch_size[0], x.shape[-1] // visual.patch_size[1]
    return (tokens @ visual.proj).reshape(x.shape[0], gh, gw, -1)


# ---- dense features ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vision",
    [
        _vision(pool_type="tok"),
        _vision(pool_type="avg"),
        _vision(pool_type="tok", ls_init_value=0.3, scale_heads=True, scale_attn_inner=True, scale_attn=True),
    ],
    ids=["tok", "avg", "custom-block"],
)
def test_tokens_mode_equals_the_towers_patch_tokens(vision, vocab):
    model = tiny_clip(seed=2, vision_cfg=vision)
    seg = _vision_segmenter(model, vocab, mode="tokens")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(seg.dense_features(x), _tower_tokens(model.visual, x), rtol=1e-5, atol=1e-5)


def test_tokens_at_other_sizes_use_bicubic_positional_embeddings(vocab):
    model = tiny_clip(seed=3, vision_cfg=_vision(pool_type="tok"))
    seg = _vision_segmenter(model, vocab, mode="tokens")
    x = torch.randn(1, 3, 48, 80)
    resized = copy.deepcopy(model.visual)
    pos = resized.positional_embedding.data
    grid = pos[1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(6, 10), mode="bicubic", align_corners=False)
    resized.positional_embedding = torch.nn.Parameter(torch.cat([pos[:1], grid[0].flatten(1).T]))
    torch.testing.assert_close(seg.dense_features(x), _tower_tokens(resized, x), rtol=1e-5, atol=1e-5)


def test_mean_pooled_tokens_average_to_the_image_embedding(vocab):
    model = tiny_clip(seed=4, vision_cfg=_vision(pool_type="avg"))
    seg = _vision_segmenter(model, vocab, mode="tokens")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(
        seg.dense_features(x).mean(dim=(1, 2)), model.encode_image(x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mode", ["v_only", "vv_res"])
def test_value_path_by_hand(mode, vocab):
    model = tiny_clip(seed=5, vision_cfg=_vision(pool_type="tok"))
    visual = model.visual
    seg = _vision_segmenter(model, vocab, mode=mode)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = last_block_input(visual, x)  # (N, 1 + 64, D): class token first
        block = visual.transformer.resblocks[-1]
        d = h.shape[-1]
        w_v, b_v = block.attn.in_proj_weight[2 * d :], block.attn.in_proj_bias[2 * d :]
        y = F.layer_norm(h, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        out = (y @ w_v.T + b_v) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        if mode == "vv_res":
            out = h + out
            out = out + block.mlp(block.ln_2(out))
        want = visual.ln_post(out[:, 1:]) @ visual.proj
    torch.testing.assert_close(seg.dense_features(x), want.reshape(2, 8, 8, -1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seg.dense_features(x), _tower_tokens(visual, x), atol=1e-3)


@pytest.mark.parametrize("custom", [False, True], ids=["default-block", "custom-block"])
def test_value_branch_is_attention_over_a_single_token(custom):
    """With one token softmax attention is the identity, so the block's own attention branch on
    length-1 sequences must equal the value branch (covers head scale, inner norm, ln_attn, ls_1)."""
    extra = {"ls_init_value": 0.3, "scale_heads": True, "scale_attn_inner": True, "scale_attn": True}
    model = tiny_clip(seed=9, vision_cfg=_vision(**(extra if custom else {})))
    block = model.visual.transformer.resblocks[-1]
    with torch.no_grad():
        for p in block.parameters():  # move the norms and scales off their identity init
            p.add_(0.1 * torch.randn_like(p))
        y = torch.randn(2, 5, 64)
        ones = y.reshape(10, 1, 64)
        if custom:
            want = block.ls_1(block.ln_attn(block.attn(ones)))
        else:
            want = block.ls_1(block.attention(q_x=ones))
        torch.testing.assert_close(value_branch(block, y), want.reshape(2, 5, 64), rtol=1e-5, atol=1e-5)


def test_tower_without_class_token(vocab):
    """A tower whose positional embedding has no class row runs on the patch tokens alone."""
    model = tiny_clip(seed=6, vision_cfg=_vision(pool_type="avg"))
    visual = model.visual
    visual.positional_embedding = torch.nn.Parameter(visual.positional_embedding.data[1:].clone())
    visual.class_embedding = None
    seg = _vision_segmenter(model, vocab, mode="tokens")
    assert seg.num_prefix == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        t = visual.conv1(x).flatten(2).transpose(1, 2) + visual.positional_embedding
        t = visual.transformer(visual.ln_pre(t))
        want = (visual.ln_post(t) @ visual.proj).reshape(1, 8, 8, -1)
    torch.testing.assert_close(seg.dense_features(x), want, rtol=1e-5, atol=1e-5)


# ---- windows ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [8, 32, 64, 72, 128, 136, 200])
def test_window_starts_cover_flush_and_stride(length):
    starts = window_starts(length, 64, 32)
    window = min(64, length)
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(0 < b - a <= 32 for a, b in zip(starts, starts[1:], strict=False))
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


def test_windows_cover_every_patch(teacher):
    seg = _segmenter(teacher)
    assert (seg.window, seg.stride) == (64, 32)
    for height, width in [(128, 128), (128, 200), (48, 136), (64, 64)]:
        count = np.zeros((height // 8, width // 8), int)
        for top, left, h, w in seg.windows(height, width):
            assert top % 8 == 0 and left % 8 == 0 and top + h <= height and left + w <= width
            count[top // 8 : (top + h) // 8, left // 8 : (left + w) // 8] += 1
        assert count.min() >= 1
    assert len(seg.windows(128, 128)) == 9  # the prototype's 3x3 grid of 64-px windows


def test_slide_averages_window_probabilities(teacher):
    seg = _segmenter(teacher, strategy="slide", short_side=96, bg_thresh=0.0)
    image = _image(96, 96, seed=3)
    result = seg([image], CLASSES)[0]
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(teacher.mean).view(1, 3, 1, 1)) / torch.tensor(teacher.std).view(1, 3, 1, 1)
    text = F.normalize(seg.vocabulary([[c] for c in CLASSES]), dim=-1)
    total, count = torch.zeros(3, 12, 12), torch.zeros(12, 12)
    for top, left in [(0, 0), (0, 32), (32, 0), (32, 32)]:
        f = F.normalize(seg.dense_features(x[..., top : top + 64, left : left + 64])[0], dim=-1)
        total[:, top // 8 : top // 8 + 8, left // 8 : left // 8 + 8] += (
            (teacher.logit_scale * f @ text.T).softmax(-1).permute(2, 0, 1)
        )
        count[top // 8 : top // 8 + 8, left // 8 : left // 8 + 8] += 1
    probs = total / count
    np.testing.assert_allclose(result.segment_probs, probs.max(0).values.flatten().numpy(), rtol=1e-5)
    np.testing.assert_array_equal(result.segment_labels, probs.argmax(0).flatten().numpy() + 1)


def test_one_window_equals_down_and_interp_at_native_size(teacher):
    image = _image(64, 64, seed=4)
    results = [
        _segmenter(teacher, strategy=s, short_side=64, bg_thresh=0.4)([image], CLASSES)[0] for s in STRATEGIES
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.labels, results[0].labels)
        np.testing.assert_array_equal(other.segment_labels, results[0].segment_labels)
        np.testing.assert_allclose(other.segment_probs, results[0].segment_probs, rtol=1e-6)


# ---- labels -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", MODES)
def test_labels_at_the_image_size_within_the_label_space(teacher, strategy, mode):
    seg = _segmenter(teacher, strategy=strategy, mode=mode, bg_thresh=0.3, short_side=96)
    images = [_image(37, 53, 0), _image(61, 29, 1)]  # odd sides, landscape and portrait
    results = seg(images, CLASSES, batch_size=2)
    for image, result in zip(images, results, strict=True):
        assert result.labels.shape == (image.height, image.width) and result.labels.dtype == np.int32
        assert result.class_names == ("background", *CLASSES)
        assert 0 <= result.labels.min() and result.labels.max() <= len(CLASSES)
        assert set(np.unique(result.segment_labels)) <= {1, 2, 3}


def test_short_side_below_the_window_shrinks_the_windows(teacher):
    seg = _segmenter(teacher, short_side=40)
    assert seg.windows(40, 96) == [(0, 0, 40, 64), (0, 32, 40, 64)]
    result = seg([_image(50, 120, 6)], CLASSES)[0]
    assert result.labels.shape == (50, 120) and result.segment_probs.shape == (5 * 12,)


@pytest.mark.skipif("triton" not in available_backends(DEVICE), reason="Triton is not installed")
@pytest.mark.parametrize("strategy", ["slide", "interp"])
def test_triton_head_gives_the_reference_labels(teacher_file, strategy):
    teacher = load_teacher(teacher_file, device=DEVICE)
    image = _image(64, 96, 7)
    kwargs = {"strategy": strategy, "short_side": 64, "bg_thresh": 0.4}
    want = _segmenter(teacher, backend="torch", **kwargs)([image], CLASSES)[0]
    got = _segmenter(teacher, backend="triton", **kwargs)([image], CLASSES)[0]
    assert (got.labels != want.labels).mean() < 1e-3  # only exact near-ties may differ
    np.testing.assert_allclose(got.segment_probs, want.segment_probs, rtol=1e-4, atol=1e-5)


def test_batching_and_chunking_do_not_change_labels(teacher):
    images = [_image(37, 53, 0), _image(61, 29, 1), _image(53, 37, 2)]
    want = _segmenter(teacher, short_side=96)(images, CLASSES, batch_size=8)
    got = _segmenter(teacher, short_side=96, max_batch=3)(images, CLASSES, batch_size=1)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.segment_probs, b.segment_probs, rtol=1e-5, atol=1e-6)


def test_threshold_one_gives_all_background(teacher):
    for strategy in STRATEGIES:
        result = _segmenter(teacher, strategy=strategy)([_image(40, 50)], CLASSES, bg_thresh=1.0)[0]
        assert (result.labels == 0).all()


def test_without_background_every_pixel_is_a_class(teacher):
    seg = _segmenter(teacher)
    image = _image(45, 60, 5)
    low = seg([image], CLASSES, background=False, bg_thresh=0.0)[0]
    high = seg([image], CLASSES, background=False, bg_thresh=1.0)[0]
    assert low.class_names == tuple(CLASSES)
    np.testing.assert_array_equal(low.labels, high.labels)  # the threshold is off
    assert low.labels.max() < len(CLASSES)
    np.testing.assert_array_equal(
        low.segment_labels + 1, seg([image], CLASSES, bg_thresh=0.0)[0].segment_labels
    )


def test_background_prompt_is_label_zero(teacher):
    seg = _segmenter(teacher)
    space = seg.label_space(CLASSES, bg_prompt=True)
    assert space.prompts[0] == ("background",) and space.label_offset == 0
    result = seg([_image(40, 40)], ["background", *CLASSES], bg_prompt=True, bg_thresh=0.0)[0]
    assert result.class_names == ("background", *CLASSES)
    assert result.labels.max() <= len(CLASSES) and result.segment_labels.min() >= 0


# ---- construction -----------------------------------------------------------------------------------


def test_from_spec_and_defaults(teacher_file):
    seg = MaskCLIPSegmenter.from_spec(teacher_file, templates=ONE_TEMPLATE)
    assert (seg.mode, seg.strategy, seg.short_side) == ("vv_res", "slide", 128)
    assert seg.default_bg_thresh == 0.5 and seg.default_bg_prompt is False
    assert seg.vocabulary.templates == ONE_TEMPLATE
    assert seg([_image(30, 70)], "red; green")[0].labels.shape == (30, 70)
    cls_seg = MaskCLIPSegmenter(_teacher_of(tiny_clip(seed=7, vision_cfg=_vision(pool_type="tok"))))
    assert cls_seg.mode == "v_only" and len(cls_seg.vocabulary.templates) == 80


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"mode": "attention"}, "mode"),
        ({"strategy": "tile"}, "strategy"),
        ({"short_side": 4}, "patch"),
        ({"bg_thresh": 1.5}, "threshold"),
        ({"max_batch": 0}, "max_batch"),
        ({"templates": ONE_TEMPLATE}, "not both"),
    ],
)
def test_bad_settings_are_one_line_errors(teacher, kwargs, words):
    with pytest.raises(ZerosegError, match=words) as info:
        _segmenter(teacher, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_calls_and_towers_are_one_line_errors(teacher):
    seg = _segmenter(teacher)
    with pytest.raises(ZerosegError, match="threshold"):
        seg([_image(20, 20)], CLASSES, bg_thresh=-0.1)
    with pytest.raises(ZerosegError, match="batch size"):
        seg([_image(20, 20)], CLASSES, batch_size=0)
    with pytest.raises(ZerosegError, match="multiple of the patch"):
        seg.dense_features(torch.zeros(1, 3, 60, 64))
    pooled = tiny_clip(seed=8, vision_cfg=_vision(attentional_pool=True, attn_pooler_heads=2))
    with pytest.raises(ZerosegError, match="attentional") as info:
        _vision_segmenter(pooled, _vocabulary(teacher))
    assert "\n" not in str(info.value)
