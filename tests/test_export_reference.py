"""The export's building blocks that need no export: the traceable head equals the reference, the
numpy resize equals PyTorch's, the text wrapper equals the text tower, manifest and vocabulary I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroseg.errors import ZerosegError
from zeroseg.export.core.manifest import (
    BundleManifest,
    BundleVocabulary,
    load_vocabulary,
    read_manifest,
    save_vocabulary,
    write_manifest,
)
from zeroseg.export.core.parity import check_gate
from zeroseg.export.core.resize import preprocess_images, resize_unit
from zeroseg.export.core.specs import BATCH, OUT_H, OUT_W, all_specs, segmenter_feed
from zeroseg.export.graphs import TextEncoderGraph
from zeroseg.kernels import reference

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [  # b, k, h, w, H, W: upsampling by odd ratios (ties of one-hot maps), equal sizes, 1 x 1
    (1, 8, 4, 4, 4, 4),
    (2, 8, 5, 7, 37, 53),
    (3, 8, 8, 5, 100, 77),
    (1, 8, 32, 43, 480, 640),
    (1, 8, 1, 1, 9, 9),
    (2, 3, 6, 6, 3, 2),
    (1, 8, 12, 16, 13, 17),
    (2, 32, 10, 10, 25, 25),
]


def _maps(b, k, h, w, one_hot, gen):
    if one_hot:
        idx = torch.randint(0, k, (b, h, w), generator=gen)
        return F.one_hot(idx, k).permute(0, 3, 1, 2).float()
    return torch.rand(b, k, h, w, generator=gen)


@pytest.mark.parametrize("b,k,h,w,H,W", SHAPES)
@pytest.mark.parametrize("one_hot", [True, False])
def test_traceable_upsampling_equals_the_reference(b, k, h, w, H, W, one_hot):
    gen = torch.Generator().manual_seed(h * 1000 + W)
    maps = _maps(b, k, h, w, one_hot, gen)
    table = torch.randint(0, 50, (b, k), generator=gen)
    probs = torch.rand(b, k, generator=gen)
    want = reference.upsample_labels_ref(maps, table, probs, (H, W), 0.3, bg_label=7)
    got = reference.upsample_labels_traceable(maps, table, probs, (H, W), torch.tensor(0.3), bg_label=7)
    assert got.dtype == want.dtype == torch.int32
    assert torch.equal(got, want)


def test_traceable_taps_reproduce_interpolate_values():
    """The explicit taps give F.interpolate's values (so ties break as in PyTorch)."""
    gen = torch.Generator().manual_seed(0)
    for h, w, H, W in [(8, 5, 100, 77), (5, 7, 37, 53), (12, 16, 13, 17), (6, 6, 6, 6)]:
        maps = torch.rand(1, 3, h, w, generator=gen)
        y0, y1, wy0, wy1 = reference.linear_taps_traceable(h, H)
        x0, x1, wx0, wx1 = reference.linear_taps_traceable(w, W)
        cols = maps[..., x0] * wx0 + maps[..., x1] * wx1
        mine = cols[:, :, y0] * wy0[:, None] + cols[:, :, y1] * wy1[:, None]
        torch.testing.assert_close(mine, F.interpolate(maps, (H, W), mode="bilinear"), rtol=0, atol=1e-6)
    i0, i1, w0, w1 = reference.linear_taps_traceable(6, 6)
    assert (
        torch.equal(i0, torch.arange(6)) and torch.equal(i1, i0) and torch.all(w1 == 0) and torch.all(w0 == 1)
    )


@pytest.mark.parametrize("size", [(5, 6), (11, 13), (3, 3)])
def test_traceable_upsampling_non_finite_rule(size):
    gen = torch.Generator().manual_seed(1)
    maps = torch.rand(2, 8, 5, 6, generator=gen)
    maps[0, 3, 2, 2] = float("nan")
    maps[1, 0, 0, 5] = float("inf")
    table, probs = torch.randint(0, 20, (2, 8), generator=gen), torch.rand(2, 8, generator=gen)
    want = reference.upsample_labels_ref(maps, table, probs, size, 0.3, bg_label=7)
    assert torch.equal(reference.upsample_labels_traceable(maps, table, probs, size, 0.3, bg_label=7), want)
    assert (want == 7).any()


@pytest.mark.parametrize("classes", [1, 200])
def test_traceable_head_equals_segment_head_ref(classes):
    gen = torch.Generator().manual_seed(classes)
    tokens = torch.randn(3, 8, 32, generator=gen)
    text = F.normalize(torch.randn(classes, 32, generator=gen), dim=-1)
    maps = _maps(3, 8, 6, 9, True, gen)
    want = reference.segment_head_ref(tokens, text, 14.0, maps, (50, 71), 0.2, label_offset=1)
    got = reference.segment_head_traceable(
        tokens, text, 14.0, maps, (50, 71), torch.tensor(0.2), label_offset=torch.tensor(1)
    )
    assert torch.equal(got.labels, want.labels)
    assert torch.equal(got.index, want.index) and torch.equal(got.prob, want.prob)


@pytest.mark.parametrize(
    "h,w,H,W", [(480, 640, 256, 344), (53, 37, 64, 40), (8, 8, 64, 64), (300, 200, 33, 17), (1, 1, 8, 8)]
)
def test_numpy_resize_matches_torch(h, w, H, W):
    from PIL import Image

    from zeroseg.data.images import to_unit_tensor
    from zeroseg.preprocess import resize_tensor

    img = Image.fromarray(np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8))
    got = preprocess_images([img], (H, W))[0]
    want = resize_tensor(to_unit_tensor(img), (H, W)).numpy()
    assert got.dtype == np.float32 and got.shape == (3, H, W)
    assert np.abs(got - want).max() < 2e-6


def test_numpy_resize_same_size_is_the_input():
    x = np.random.default_rng(0).random((3, 16, 24), dtype=np.float32)
    assert resize_unit(x, (16, 24)) is x


def test_text_wrapper_equals_the_text_tower(world):
    from zeroseg.checkpoint import load_checkpoint

    encoder = load_checkpoint(world.checkpoint).build_text_encoder()
    tokens = encoder.tokenize(["a photo of a cat.", "dog", "x " * 40, "a picture of a traffic light."])
    with torch.no_grad():
        got = TextEncoderGraph(encoder)(tokens)
        want = F.normalize(encoder(tokens).float(), dim=-1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def _manifest() -> BundleManifest:
    return BundleManifest(
        versions={"zeroseg": "0.1.0"}, exporter={"opset": 20}, graphs={}, preprocess={"short_side": 64},
        text={}, model={}, source={}, parity={"segmenter": {"pixel_agreement": 1.0}}, files={},
    )  # fmt: skip


def test_manifest_round_trip_and_edit_detection(tmp_path):
    write_manifest(tmp_path, _manifest())
    assert read_manifest(tmp_path) == _manifest()
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    data["parity"]["segmenter"]["pixel_agreement"] = 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(ZerosegError, match="edited after export"):
        read_manifest(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ZerosegError, match="not readable JSON"):
        read_manifest(tmp_path)
    with pytest.raises(ZerosegError, match="no manifest.json"):
        read_manifest(tmp_path / "..")


def test_vocabulary_round_trip_and_lookup(tmp_path):
    emb = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    vocab = BundleVocabulary((("cat",), ("dog", "puppy"), ("background",)), emb, ("a {}.",))
    save_vocabulary(tmp_path / "vocab.npz", vocab)
    back = load_vocabulary(tmp_path / "vocab.npz")
    assert back.entries == vocab.entries and back.templates == vocab.templates
    found, missing = back.lookup([("Dog", "Puppy"), ("cat",)])
    assert missing == [] and np.array_equal(found, emb[[1, 0]])
    found, missing = back.lookup([("cat",), ("zebra",)])
    assert found is None and missing == ["zebra"]


def test_specs_name_every_tensor_once():
    specs = all_specs(8, 64, 77)
    assert set(specs) == {"image_encoder", "text_encoder", "segmenter"}
    for spec in specs.values():
        names = spec.input_names + spec.output_names
        assert len(names) == len(set(names))
    assert specs["segmenter"].outputs[0].dims == (BATCH, OUT_H, OUT_W)
    feed = segmenter_feed(np.zeros((1, 3, 8, 8)), np.zeros((2, 4)), 0.5, 1, (9, 10))
    assert list(feed) == specs["segmenter"].input_names
    assert feed["output_size"].dtype == np.int64 and feed["bg_thresh"].shape == ()


def test_gate_error_is_one_line_naming_graph_and_figure():
    check_gate("segmenter.onnx", "label-map pixel agreement", 0.9995, 0.999)
    with pytest.raises(ZerosegError) as exc:
        check_gate("segmenter.onnx", "label-map pixel agreement", 0.98, 0.999)
    message = str(exc.value)
    assert (
        "\n" not in message and "segmenter.onnx" in message and "98.0000%" in message and "99.90%" in message
    )


# ---- the dense head's traceable variant ----------------------------------------------------------

DENSE_SHAPES = [  # b, h, w, C, H, W: odd ratios, equal sizes, one patch, downsampling, many classes
    (1, 4, 4, 7, 4, 4),
    (2, 5, 7, 7, 37, 53),
    (1, 16, 21, 7, 128, 128),
    (1, 1, 1, 3, 9, 9),
    (2, 6, 6, 5, 3, 2),
    (1, 8, 5, 150, 100, 77),
]


@pytest.mark.parametrize("b,h,w,c,H,W", DENSE_SHAPES)
@pytest.mark.parametrize("thresh", [0.0, 0.35, 0.9])
def test_dense_head_traceable_equals_dense_head_ref(b, h, w, c, H, W, thresh):
    """Labels, per-patch index and probability bit for bit, thresholds from none to most pixels."""
    gen = torch.Generator().manual_seed(h * 100 + c)
    tokens = torch.randn(b, h, w, 32, generator=gen)
    text = F.normalize(torch.randn(c, 32, generator=gen), dim=-1)
    want = reference.dense_head_ref(tokens, text, 30.0, (H, W), thresh, bg_label=0, label_offset=1)
    got = reference.dense_head_traceable(
        tokens, text, 30.0, (H, W), torch.tensor(thresh), label_offset=torch.tensor(1)
    )
    assert got.labels.dtype == want.labels.dtype == torch.int32
    assert torch.equal(got.labels, want.labels)
    assert torch.equal(got.index, want.index) and torch.equal(got.prob, want.prob)
    if thresh == 0.9 and h * w > 1:
        assert (want.labels == 0).any()  # the threshold paints background somewhere


def test_dense_head_traceable_ties_and_non_finite():
    """Equal class scores go to the lower class (as the reference), a NaN token paints background
    around its patch, and the patch tokens of one-hot segments tie across whole segments."""
    gen = torch.Generator().manual_seed(3)
    segments = torch.randn(2, 4, 16, generator=gen)
    maps = _maps(2, 4, 6, 5, True, gen)
    tokens = reference.patch_tokens_ref(segments, maps)
    owner = maps.argmax(dim=1)  # (B, h, w)
    assert torch.equal(tokens, segments[torch.arange(2)[:, None, None], owner])
    text = F.normalize(torch.randn(4, 16, generator=gen), dim=-1)
    text = torch.cat([text, text[1:2], text[1:2]])  # classes 1, 4, 5 tie everywhere
    tokens[1, 2, 3] = float("nan")
    want = reference.dense_head_ref(tokens, text, 20.0, (23, 17), 0.1, label_offset=3)
    got = reference.dense_head_traceable(tokens, text, 20.0, (23, 17), 0.1, label_offset=3)
    assert torch.equal(got.labels, want.labels) and (want.labels[1] == 0).any()
    assert not ((want.labels == 4 + 3) | (want.labels == 5 + 3)).any()  # ties -> the lower class
    assert torch.equal(got.index, want.index)


def test_segmenter_spec_per_patch_outputs_of_the_dense_head():
    from zeroseg.export.core.specs import PATCHES, segmenter_spec

    paper, dense = segmenter_spec(8, 32), segmenter_spec(8, 32, "dense")
    assert paper.input_names == dense.input_names and paper.output_names == dense.output_names
    assert [t.dims for t in paper.outputs[1:]] == [(BATCH, 8), (BATCH, 8)]
    assert [t.dims for t in dense.outputs[1:]] == [(BATCH, PATCHES), (BATCH, PATCHES)]
