"""The vectorized backend gives the reference's labels exactly (torch.equal), on every path.

`zeroseg.kernels.vectorized` has a general path (the reference's own F.interpolate calls, a cheaper
reduction and table) and, on CPU in segment mode, the owner shortcut (one-hot pixels painted by
table, the rest recomputed with PyTorch's CPU kernel arithmetic). These tests fuzz both against
`reference.upsample_labels_ref`, check which path ran, and prove the recomputation bit-identical to
`F.interpolate` wherever the shortcut is allowed to use it.
"""

from __future__ import annotations

import helpers
import pytest
import torch
import torch.nn.functional as F

import zeroseg.kernels as zk
from zeroseg.kernels import reference, vectorized

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors; the thread tests set their own

needs_exact_recompute = pytest.mark.skipif(
    not vectorized._recomputation_exact(), reason="this host's F.interpolate is not reproduced: no shortcut"
)


def _one_hot(b, k, h, w, gen, blobs=True):
    """Hard assignment maps (B, K, h, w), contiguous like a student's: blocky segments or noise."""
    if blobs:
        coarse = torch.randint(0, k, (b, max(1, h // 3), max(1, w // 3)), generator=gen)
        idx = F.interpolate(coarse[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    else:
        idx = torch.randint(0, k, (b, h, w), generator=gen)
    return F.one_hot(idx, k).permute(0, 3, 1, 2).float().contiguous()


def _segment_inputs(b, k, gen):
    table = torch.randint(1, 200, (b, k), generator=gen)
    probs = torch.rand(b, k, generator=gen)
    return table, probs


def _both(maps, table, probs, size, thresh, **kw):
    got = zk.upsample_labels(maps, table, probs, size, thresh, backend="vectorized", **kw)
    want = reference.upsample_labels_ref(maps, table, probs, size, thresh, **kw)
    return got, want


class _Spy:
    """Counts the images the owner shortcut saw, the pixel entries it recomputed and the most
    candidate maps it compared at once."""

    def __init__(self, monkeypatch):
        self.images, self.entries, self.candidates = 0, 0, 0
        paint, border = vectorized._paint, vectorized._border_values

        def spy_paint(*a, **k):
            self.images += 1
            return paint(*a, **k)

        def spy_border(m, cols, rows, pair, col, cand):
            self.entries += pair.numel()
            self.candidates = max(self.candidates, cand.shape[0])
            return border(m, cols, rows, pair, col, cand)

        monkeypatch.setattr(vectorized, "_paint", spy_paint)
        monkeypatch.setattr(vectorized, "_border_values", spy_border)


# ---- the recomputation is F.interpolate, bit for bit -------------------------------------------

SIZES = [  # h, w, H, W: up, down, equal, odd ratios, one axis equal, 1 x 1; all with H + W > 128
    (32, 43, 480, 640),
    (7, 9, 61, 83),
    (5, 7, 101, 53),
    (13, 17, 70, 70),
    (200, 150, 70, 90),  # downsampling
    (90, 80, 90, 80),  # equal size
    (70, 6, 70, 83),  # equal along H
    (1, 1, 65, 66),
    (9, 128, 3, 129),
]


@needs_exact_recompute
@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("h,w,H,W", SIZES)
def test_recomputation_is_bit_identical_to_interpolate(h, w, H, W, merged):
    gen = torch.Generator().manual_seed(h * W)
    k = 2 if h * w == 1 else 4  # (B, C > 3, 1, 1) counts as channels-last: PyTorch's other kernel
    m = torch.rand(k, h, w, generator=gen) * 2 - 0.5
    m[1] = (m[1] > 0.5).float()  # a one-hot-like map: exact zeros and ones
    assert vectorized._generic_kernel(m[None], (H, W))
    want = F.interpolate(m[None], size=(H, W), mode="bilinear", align_corners=False)[0].view(k, -1)
    cols, rows = vectorized._col_plan(w, W, m.device), vectorized._row_plan(h, H, m.device, merged)
    entries = torch.arange(2 * h * W)
    pair, col = entries // W, entries % W
    values = vectorized._border_values(
        m, cols, rows, pair, col, torch.arange(k)[:, None].expand(k, pair.numel())
    )
    dest = rows.rows.index_select(1, pair) * W + col
    real = dest < H * W
    assert torch.equal(dest[real].sort().values, torch.arange(H * W))  # every pixel exactly once
    assert torch.equal(values[:, real], want[:, dest[real]])


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="not an x86 FMA build"
)
def test_the_shortcut_is_on_for_fma_builds():
    """PyTorch's AVX2 / AVX-512 kernels contract t0 * w0 + t1 * w1 into fma(t0, w0, t1 * w1): the probe
    must find the recomputation exact there, or the shortcut silently stays off."""
    assert vectorized._recomputation_exact()


@pytest.mark.parametrize(
    "k,size,threads,channels_last,generic",
    [
        (4, (64, 64), 2, False, False),  # H + W <= 128: PyTorch's channels-last kernel
        (4, (64, 65), 2, False, True),
        (3, (70, 90), 1, False, False),  # 3 channels on one thread: channels-last kernel
        (3, (70, 90), 2, False, True),
        (5, (70, 90), 2, True, False),  # channels-last input, > 3 channels
        (3, (70, 90), 2, True, True),
    ],
)
def test_shortcut_only_where_interpolate_runs_the_generic_kernel(
    monkeypatch, k, size, threads, channels_last, generic
):
    gen = torch.Generator().manual_seed(k)
    maps = _one_hot(1, k, 9, 11, gen)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    table, probs = _segment_inputs(1, k, gen)
    spy = _Spy(monkeypatch)
    with helpers.torch_threads(threads):
        assert vectorized._generic_kernel(maps, size) == generic
        got, want = _both(maps, table, probs, size, 0.3)
    assert torch.equal(got, want)
    assert spy.images == (1 if generic and vectorized._recomputation_exact() else 0)


# ---- fuzz against the reference -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_fuzz_segment_mode(seed):
    gen = torch.Generator().manual_seed(seed)
    b, k = int(torch.randint(1, 3, (1,), generator=gen)), int(torch.randint(1, 10, (1,), generator=gen))
    h, w = (int(v) for v in torch.randint(1, 20, (2,), generator=gen))
    H, W = (int(v) for v in torch.randint(40, 120, (2,), generator=gen))
    if seed % 4 == 3:
        H, W = h, w  # an equal-size copy
    dtype = (torch.float32, torch.float16, torch.bfloat16)[seed % 3]
    kind = seed % 3
    if kind == 0:
        maps = _one_hot(b, k, h, w, gen)
    elif kind == 1:
        maps = _one_hot(b, k, h, w, gen, blobs=False) * (torch.rand(b, 1, h, w, generator=gen) + 0.1)
    else:
        maps = torch.rand(b, k, h, w, generator=gen).round(decimals=1)  # soft, with many exact ties
    table, probs = _segment_inputs(b, k, gen)
    thresh = float(probs.median())
    out_dtype = (torch.int32, torch.int16, torch.uint8)[seed % 3]
    got, want = _both(maps.to(dtype), table, probs, (H, W), thresh, out_dtype=out_dtype, bg_label=seed)
    assert got.dtype == out_dtype and torch.equal(got, want)


@needs_exact_recompute
@pytest.mark.parametrize("blobs", [True, False])
@pytest.mark.parametrize(
    "h,w,H,W,ties",
    [(32, 43, 480, 640, False), (16, 22, 256, 344, False), (7, 5, 99, 71, False), (20, 30, 45, 90, True)],
)
def test_one_hot_maps_take_the_shortcut(monkeypatch, blobs, h, w, H, W, ties):
    """Student maps are hard assignments: most pixels painted by table, the borders recomputed with
    ties broken like PyTorch (exact two-way ties where a ratio gives weights of 1/2, near ties decided
    by the last bit)."""
    gen = torch.Generator().manual_seed(h + W)
    maps = _one_hot(2, 8, h, w, gen, blobs=blobs)
    table, probs = _segment_inputs(2, 8, gen)
    spy = _Spy(monkeypatch)
    got, want = _both(maps, table, probs, (H, W), 0.4)
    assert torch.equal(got, want)
    if blobs:  # per-pixel noise is nearly all border: recomputing it would not pay
        assert spy.images == 2 and 0 < spy.entries < 2 * 2 * h * W
        assert spy.candidates == 4  # segment borders: only the owners of the four taps are compared
    up = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    top2 = up.topk(2, dim=1).values
    assert bool((top2[:, 0] == top2[:, 1]).any()) == ties


@pytest.mark.parametrize("path", ["shortcut", "general"])
def test_exact_ties_first_map_wins(monkeypatch, path):
    idx = torch.zeros(1, 16, 20, dtype=torch.long)
    idx[:, :, 9:], idx[:, 10:, :6], idx[:, :4, 14:] = 2, 3, 1  # four segments, map 1 the smallest
    maps = F.one_hot(idx, 6).permute(0, 3, 1, 2).float().contiguous()
    maps[:, 4] = maps[:, 1]  # a duplicate map: no single owner there, and ties that map 1 must win
    if path == "general":
        monkeypatch.setattr(vectorized, "_owner_labels", lambda *a: None)
    spy = _Spy(monkeypatch)
    table = torch.arange(6)[None] + 1
    got, want = _both(maps, table, torch.ones(1, 6), (157, 195), 0.5)
    assert torch.equal(got, want) and (got == 2).any() and not (got == 5).any()
    if path == "shortcut" and vectorized._recomputation_exact():  # unowned taps: all maps compared
        assert spy.images == 1 and spy.candidates == 6


def test_negative_values_beside_an_owner_are_not_ownership():
    """Only exact zeros make a pixel owned: with negative values beside the positive one, a map that
    owns no tap can win where two segments meet (both their values are negative there)."""
    maps = torch.zeros(1, 6, 8, 10)  # more than 4 maps: only tap owners would be compared
    maps[0, 0, :, :5], maps[0, 1, :, 5:] = 1e-3, 1e-3  # two segments, maps 2.. are 0 everywhere
    maps[0, 1, :, :5], maps[0, 0, :, 5:] = -100.0, -100.0
    got, want = _both(maps, torch.arange(6)[None] + 1, torch.ones(1, 6), (70, 90), 0.5)
    assert torch.equal(got, want) and (got == 3).any()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("size", [(90, 120), (8, 10)])  # up, and an equal-size copy
def test_non_finite_maps_and_probs(soft, size):
    gen = torch.Generator().manual_seed(5)
    maps = torch.rand(2, 5, 8, 10, generator=gen) if soft else _one_hot(2, 5, 8, 10, gen)
    maps[0, 1, 2, 3] = float("nan")
    maps[0, 0, 5, 5] = float("inf")
    maps[1, 4, 7, 9] = -float("inf")
    maps[1, 2, 0, 0] = float("nan")
    table, probs = _segment_inputs(2, 5, gen)
    probs[1, 3] = float("nan")  # a NaN score is background
    got, want = _both(maps, table, probs, size, 0.2, bg_label=99)
    assert torch.equal(got, want)
    bad = reference.nonfinite_pixels_ref(maps, size)
    assert bad.any() and (got[bad] == 99).all() and (got[~bad] != 99).any()


def test_huge_finite_values_fall_out_of_the_shortcut():
    """Values beyond 2**100 are never owners (their products could overflow): recomputed instead."""
    gen = torch.Generator().manual_seed(6)
    top = torch.finfo(torch.float32).max
    maps = _one_hot(1, 4, 6, 7, gen) * top
    maps[0, 2, 1:3, 1:3] = -top  # interpolation overflows to +-inf, and inf - inf is NaN
    table, probs = _segment_inputs(1, 4, gen)
    got, want = _both(maps, table, probs, (70, 80), 0.0)
    assert torch.equal(got, want)


@pytest.mark.parametrize("thresh", [0.0, 1.0])
def test_threshold_extremes(thresh):
    gen = torch.Generator().manual_seed(7)
    maps = _one_hot(1, 5, 9, 9, gen, blobs=False)
    table = torch.arange(5)[None] + 1
    probs = torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.0]])
    got, want = _both(maps, table, probs, (100, 64), thresh, bg_label=200, out_dtype=torch.uint8)
    assert torch.equal(got, want)
    assert (got == 200).any() == (thresh > 0) and (got != 200).any()


# ---- dense mode (probs=None) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "c,grid,size",
    [
        (21, (6, 5), (48, 40)),
        (150, (7, 9), (70, 90)),
        (3, (4, 4), (4, 4)),
    ],
)
@pytest.mark.parametrize("out_dtype", [torch.int32, torch.int16])
def test_dense_head_equals_reference(c, grid, size, out_dtype):
    gen = torch.Generator().manual_seed(c)
    patches = torch.randn(2, *grid, 32, generator=gen)
    text = torch.randn(c, 32, generator=gen)
    thresh = round(float(reference.dense_head_ref(patches, text, 30.0, size, 0.0).prob.median()), 3)
    got = zk.dense_head(patches, text, 30.0, size, thresh, backend="vectorized", out_dtype=out_dtype)
    want = reference.dense_head_ref(patches, text, 30.0, size, thresh, out_dtype=out_dtype)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert (got.labels == 0).any() and (got.labels != 0).any()


def test_dense_mode_chunks_keep_the_first_map_on_ties(monkeypatch):
    """Many classes are interpolated a few at a time, as the reference does; ties across chunks."""
    gen = torch.Generator().manual_seed(8)
    maps = torch.rand(2, 40, 5, 6, generator=gen).round(decimals=1)
    maps[:, 33] = maps[:, 3] = maps[:, 3] + 0.5  # equal best maps in different chunks
    table = (torch.arange(40) + 1).expand(2, 40)
    monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", 3 * 2 * 20 * 18)  # three maps per chunk
    got, want = _both(maps, table, None, (20, 18), 0.55)
    assert torch.equal(got, want) and (got == 4).any() and not (got == 34).any()
    best = vectorized.best_maps(maps, (20, 18))
    ref_best = reference.upsample_argmax_ref(maps, (20, 18))
    assert torch.equal(best[0], ref_best[0]) and torch.equal(best[1], ref_best[1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_dense_mode_non_finite_and_extremes():
    gen = torch.Generator().manual_seed(9)
    maps = torch.softmax(torch.randn(1, 12, 7, 8, generator=gen) * 3, dim=1)
    maps[0, 5, 3, 3] = float("nan")
    maps[0, 0, 0, 7] = float("inf")
    table = (torch.arange(12) + 3).expand(1, 12)
    for thresh in (0.0, 0.3, 1.0):
        got, want = _both(maps, table, None, (50, 90), thresh, bg_label=1)
        assert torch.equal(got, want)


def test_dense_threshold_is_inclusive():
    """An equal-size resize is a copy, so scores hit the threshold exactly."""
    maps = torch.tensor([[[[0.5, 0.25], [0.75, 0.5]], [[0.5, 0.75], [0.25, 0.125]]]])
    table = torch.tensor([[1, 2]])
    got, want = _both(maps, table, None, (2, 2), 0.5, bg_label=9)
    assert torch.equal(got, want) and got.tolist() == [[[1, 2], [1, 1]]]
    got, want = _both(maps.expand(1, 2, 2, 2).repeat(1, 1, 40, 40), table, None, (80, 80), 0.75)
    assert torch.equal(got, want) and (got != 0).any()


# ---- the heads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"bg_label": 255, "label_offset": 0, "out_dtype": torch.uint8}])
def test_segment_head_equals_reference(kw):
    gen = torch.Generator().manual_seed(10)
    tokens, text = torch.randn(2, 8, 64, generator=gen), torch.randn(20, 64, generator=gen)
    maps = _one_hot(2, 8, 16, 22, gen)
    got = zk.segment_head(tokens, text, 30.0, maps, (256, 344), 0.5, backend="vectorized", **kw)
    want = reference.segment_head_ref(tokens, text, 30.0, maps, (256, 344), 0.5, **kw)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_empty_batch():
    maps, table = torch.rand(0, 3, 4, 4), torch.zeros(0, 3, dtype=torch.long)
    out = zk.upsample_labels(maps, table, torch.rand(0, 3), (90, 70), 0.5, backend="vectorized")
    assert out.shape == (0, 90, 70) and out.dtype == torch.int32
