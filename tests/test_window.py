"""Windowed attention (`zeroseg.model.window`): each window is a crop with full attention plus the
global tokens, the global tokens see everything, a window as large as the grid is full attention,
and an exported graph stays right at every grid size."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from timm.models.vision_transformer import Block

from zeroseg.errors import ZerosegError
from zeroseg.model.config import StudentConfig, student_preset
from zeroseg.model.student import ZeroSegStudent
from zeroseg.model.window import run_blocks, windowed_attention


@pytest.fixture(scope="module")
def block() -> Block:
    torch.manual_seed(0)
    return Block(32, 4, qkv_bias=True).eval()


def _crop(
    x: torch.Tensor, h: int, w: int, rows: slice, cols: slice, prefix: int, suffix: int
) -> torch.Tensor:
    """The tokens one window sees: its grid crop between the prefix and suffix tokens."""
    grid = x[:, prefix : x.shape[1] - suffix].reshape(x.shape[0], h, w, -1)[:, rows, cols]
    return torch.cat(
        [x[:, :prefix], grid.reshape(x.shape[0], -1, x.shape[2]), x[:, x.shape[1] - suffix :]], 1
    )


@pytest.mark.parametrize("prefix,suffix", [(1, 0), (0, 3), (2, 2)])
def test_every_window_is_a_crop_with_full_attention_plus_the_global_tokens(block, prefix, suffix) -> None:
    h, w, size = 7, 10, 4  # windows 4x4, the last row and column of windows padded
    x = torch.randn(2, prefix + h * w + suffix, 32)
    with torch.no_grad():
        out = windowed_attention(block.attn, x, (h, w), size, prefix, suffix)
        grid = out[:, prefix : out.shape[1] - suffix].reshape(2, h, w, -1)
        for r in range(0, h, size):
            for c in range(0, w, size):
                rows, cols = slice(r, r + size), slice(c, c + size)
                crop = _crop(x, h, w, rows, cols, prefix, suffix)
                want = block.attn(crop)[:, prefix : crop.shape[1] - suffix]
                got = grid[:, rows, cols].reshape(2, -1, 32)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        full = block.attn(x)  # the global tokens attend to every token
        torch.testing.assert_close(out[:, :prefix], full[:, :prefix], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[:, out.shape[1] - suffix :], full[:, x.shape[1] - suffix :],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_a_window_as_large_as_the_grid_is_the_blocks_own_forward(block) -> None:
    x = torch.randn(2, 1 + 6 * 5 + 2, 32)
    blocks = torch.nn.Sequential(block)
    with torch.no_grad():
        for size in (6, 16):
            torch.testing.assert_close(
                run_blocks(blocks, x, (6, 5), size, 1, 2), block(x), atol=1e-5, rtol=1e-5
            )
        assert torch.equal(run_blocks(blocks, x, (6, 5), None, 1, 2), block(x))


def _student(**windows: int | None) -> ZeroSegStudent:
    torch.manual_seed(0)
    return ZeroSegStudent(student_preset("shapeworld", **windows)).eval()


def test_the_student_at_its_training_size_is_unchanged_by_windows_of_its_grid() -> None:
    full = _student()
    windowed = _student(attn_window=16, head_window=16)
    windowed.load_state_dict(full.state_dict())
    x = torch.randn(2, 3, 128, 128)  # the shapeworld preset's training input: a 16 x 16 grid
    a, b = full.segment(x), windowed.segment(x)
    torch.testing.assert_close(a.segments, b.segments, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.maps, b.maps)
    larger = torch.randn(1, 3, 256, 192)  # beyond it, the windows change the computation
    assert not torch.allclose(full.segment(larger).segments, windowed.segment(larger).segments, atol=1e-4)


def test_a_graph_exported_with_dynamic_sizes_stays_right_at_every_grid() -> None:
    model = _student(attn_window=4, head_window=6)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model.segment(pixels)
            return out.segments, out.maps

    wrapper = Wrapper().eval()
    dim = torch.export.Dim
    dynamic = {"pixels": {0: dim("b", min=1, max=8), 2: 8 * dim("gh", min=2, max=64),
                          3: 8 * dim("gw", min=2, max=64)}}  # fmt: skip
    program = torch.export.export(wrapper, (torch.randn(2, 3, 8 * 9, 8 * 11),), dynamic_shapes=dynamic)
    for shape in ((1, 3, 16, 16), (1, 3, 8 * 4, 8 * 12), (2, 3, 8 * 13, 8 * 7), (1, 3, 8 * 24, 8 * 24)):
        pixels = torch.randn(*shape)
        want, got = wrapper(pixels), program.module()(pixels)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(got[1], want[1]), shape


@pytest.mark.parametrize("field", ["attn_window", "head_window"])
def test_bad_windows_are_refused_and_old_configs_load_without_them(field: str) -> None:
    with pytest.raises(ZerosegError, match=f"{field} must be a positive number of patches"):
        student_preset("shapeworld", **{field: 0})
    old = student_preset("shapeworld").to_dict()
    assert not any(k.endswith("_window") for k in old)  # unset: left out, as before they existed
    cfg = StudentConfig.from_dict(old)
    assert cfg.attn_window is None and cfg.head_window is None
    assert dataclasses.replace(cfg, **{field: 16}).validate().to_dict()[field] == 16


@pytest.mark.slow
def test_a_windowed_checkpoint_exports_to_onnx_with_the_same_labels_at_other_sizes(tmp_path) -> None:
    """The windowed design in an engine (the bundled model is one): its ONNX bundle passes its parity
    gate and labels scenes of other sizes as PyTorch does (the window arithmetic is exported for
    every grid, not the traced one); its attention, fused with the padding mask as
    MultiHeadAttention's attention_bias, expands back (`unfuse_attention`: int8, OpenVINO, TensorRT)
    to the same outputs."""
    import export_helpers as eh
    import helpers
    import numpy as np
    import onnx

    import zeroseg
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.export.onnx.fuse import op_counts, unfuse_attention
    from zeroseg.export.onnx.runtime import open_session

    windowed = bundled_checkpoint()
    assert load_checkpoint(windowed, with_train_state=False).student_config.attn_window == 16
    with helpers.torch_threads(1):
        bundle, _ = eh.export(windowed, tmp_path / "onnx", labels=eh.COLOURS, threads=1, short_side=256)
        images = [eh.scenes(1, seed=4, size=192)[0].resize(size) for size in ((384, 256), (200, 330))]
        for side in (128, 384):  # grids of 16 x 24 to 48 x 79 patches: whole and padded windows
            got = zeroseg.load(bundle, threads=1, short_side=side)(images, eh.COLOURS)
            want = zeroseg.load(windowed, threads=1, short_side=side)(images, eh.COLOURS)
            for g, w in zip(got, want, strict=True):
                assert (g.labels == w.labels).mean() >= 0.999, side
    model = onnx.load(str(bundle / "image_encoder.onnx"))
    fused = op_counts(model)["com.microsoft.MultiHeadAttention"]
    biased = sum(1 for n in model.graph.node if n.op_type == "MultiHeadAttention" and len(n.input) > 5)
    assert biased == 4 and unfuse_attention(model) == fused  # the encoder's 4 windowed blocks
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    feed = {"pixels": np.random.default_rng(0).random((1, 3, 200, 344), dtype=np.float32)}
    fused_out = open_session(bundle / "image_encoder.onnx", threads=1).run(None, feed)
    for a, b in zip(fused_out, open_session(plain, threads=1).run(None, feed), strict=True):
        assert np.abs(a - b).max() < 1e-5
