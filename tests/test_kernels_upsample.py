"""upsample_labels: every backend against a float64 bilinear oracle, the others against the reference.

The Triton kernel only writes labels; its private `best_out` output (the best interpolated value per
pixel) lets these tests check its arithmetic against `F.interpolate` to 1e-5 as well. With
ZEROSEG_TEST_GPU=1 the ops run on CUDA tensors instead of in Triton's interpreter.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from zeroseg.errors import ZerosegError
from zeroseg.kernels import reference, upsample_labels, vectorized

BACKENDS = ["torch", "vectorized", "triton"]
DEVICE = "cuda" if os.environ.get("ZEROSEG_TEST_GPU") == "1" else "cpu"


def up(maps, table, probs, *args, **kwargs) -> torch.Tensor:
    """The public op on the test device, labels back on the CPU."""
    probs = None if probs is None else probs.to(DEVICE)
    return upsample_labels(maps.to(DEVICE), table.to(DEVICE), probs, *args, **kwargs).cpu()


def _axis(n_in: int, n_out: int):
    """float64 taps of F.interpolate(bilinear, align_corners=False) along one axis."""
    dst = torch.arange(n_out)
    if n_in == n_out:
        return dst, dst, torch.zeros(n_out, dtype=torch.float64)
    src = ((dst.double() + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    return i0, (i0 + 1).clamp_max(n_in - 1), (src - i0).clamp(0.0, 1.0)


def _oracle(maps, table, probs, size, thresh, bg=0):
    """float64 labels, best value and top-two gap per pixel."""
    (y0, y1, ly), (x0, x1, lx) = _axis(maps.shape[2], size[0]), _axis(maps.shape[3], size[1])
    m = maps.double()
    rows = m[:, :, y0] * (1 - ly)[:, None] + m[:, :, y1] * ly[:, None]
    up = rows[..., x0] * (1 - lx) + rows[..., x1] * lx  # (B, K, H, W)
    top2 = up.topk(min(2, up.shape[1]), dim=1).values
    gap = top2[:, 0] - top2[:, -1] if up.shape[1] > 1 else torch.full_like(top2[:, 0], torch.inf)
    best_val, best_k = up.max(dim=1)
    score = best_val if probs is None else probs.double().gather(1, best_k.flatten(1)).view_as(best_k)
    labels = torch.where(score >= thresh, table.long().gather(1, best_k.flatten(1)).view_as(best_k), bg)
    return labels, best_val, gap


def _run(backend, maps, table, probs, size, thresh, **kw):
    """Labels through the public API, and the backend's best interpolated value per pixel."""
    labels = up(maps, table, probs, size, thresh, backend=backend, **kw)
    if backend == "torch":
        best = reference.upsample_argmax_ref(maps, size)[0]
    elif backend == "vectorized":
        best = vectorized.best_maps(maps.to(DEVICE), size)[0]
    else:
        from zeroseg.kernels.triton_upsample import upsample_labels_triton

        best = torch.empty(labels.shape, dtype=torch.float32, device=DEVICE)
        probs = None if probs is None else probs.to(DEVICE)
        upsample_labels_triton(maps.to(DEVICE), table.to(DEVICE), probs, size, thresh, best_out=best, **kw)
    return labels, best.cpu()


def _inputs(b, k, h, w, with_probs, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(b, k, h, w, generator=g).to(dtype)
    table = torch.randperm(100, generator=g)[: b * k].view(b, k) + 1
    probs = torch.rand(b, k, generator=g) * 0.5 + 0.5 if with_probs else None
    if probs is not None and k > 1:
        probs[:, 0] = 0.1  # one segment below the thresholds used here: background appears
    return maps, table, probs


CASES = [  # b, k, h, w, H, W, with_probs
    (1, 3, 28, 28, 448, 448, True),  # ZeroSeg: 28x28 patch grid to a 448 image (scale 16)
    (2, 4, 7, 7, 28, 28, False),  # scale 4, dense mode
    (1, 5, 5, 5, 5, 5, True),  # scale 1: a copy
    (1, 3, 3, 2, 48, 32, False),  # scale 16, non-square
    (1, 2, 4, 6, 34, 51, True),  # scale 8.5
    (2, 3, 7, 5, 29, 13, False),  # odd sizes, different scale per axis
    (1, 1, 6, 9, 20, 7, True),  # K = 1, up along H and down along W
    (1, 4, 9, 8, 3, 5, False),  # downsampling
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("b,k,h,w,H,W,with_probs", CASES)
def test_matches_float64_oracle(backend, b, k, h, w, H, W, with_probs):
    maps, table, probs = _inputs(b, k, h, w, with_probs, seed=h * W + k)
    thresh = 0.4 if with_probs else 0.5
    labels, best = _run(backend, maps, table, probs, (H, W), thresh)
    want, want_best, gap = _oracle(maps, table, probs, (H, W), thresh)
    assert labels.shape == (b, H, W) and labels.dtype == torch.int32
    assert (best.double() - want_best).abs().max() <= 1e-5
    clear = gap > 1e-5  # pixels where fp32 rounding cannot swap the best two maps
    assert clear.float().mean() >= 0.99
    assert torch.equal(labels[clear], want[clear].int())
    if k > 1:  # both branches of the threshold are exercised
        assert (labels == 0).any() and (labels != 0).any()


@pytest.mark.parametrize("backend", ["vectorized", "triton"])
@pytest.mark.parametrize("b,k,h,w,H,W,with_probs", CASES)
def test_backend_labels_identical_to_reference(backend, b, k, h, w, H, W, with_probs):
    maps, table, probs = _inputs(b, k, h, w, with_probs, seed=h * W + k)
    thresh = 0.4 if with_probs else 0.5
    got, got_best = _run(backend, maps, table, probs, (H, W), thresh)
    want = reference.upsample_labels_ref(maps, table, probs, (H, W), thresh)
    want_best = reference.upsample_argmax_ref(maps, (H, W))[0]
    assert torch.equal(got, want)
    assert (got_best - want_best).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_probs", [True, False])
def test_exact_ties_first_map_wins(backend, with_probs):
    maps, table, probs = _inputs(2, 5, 6, 7, with_probs, seed=1)
    maps[:, 3] = maps[:, 1] = maps[:, 1] + 2.0  # maps 1 and 3 equal and above all others
    labels = up(maps, table, probs, (25, 30), 0.0, backend=backend)
    assert torch.equal(labels, table[:, 1, None, None].int().expand(2, 25, 30))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_is_inclusive(backend):
    maps, table, _ = _inputs(1, 2, 4, 4, False, seed=2)
    probs = torch.tensor([[0.5, 0.5]])
    at = up(maps, table, probs, (8, 8), 0.5, backend=backend)
    above = up(maps, table, probs, (8, 8), 0.5000001, backend=backend)
    assert set(at.unique().tolist()) == set(table[0].tolist())
    assert above.unique().tolist() == [0]
    ones = up(maps, table, torch.ones(1, 2), (8, 8), 1.0, backend=backend, bg_label=9)
    assert 9 not in ones.unique().tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype,top,bg", [(torch.uint8, 255, 0), (torch.int16, -7, 32767), (torch.int32, 70000, -1)]
)
def test_output_dtypes(backend, dtype, top, bg):
    maps = torch.zeros(1, 2, 3, 3)
    maps[0, 1, :, 1:] = 1.0  # right part: map 1 (probability 1); left column: map 0 (probability 0)
    table = torch.tensor([[1, top]], dtype=torch.int64)
    probs = torch.tensor([[0.0, 1.0]])
    labels = up(maps, table, probs, (3, 3), 0.5, bg_label=bg, out_dtype=dtype, backend=backend)
    assert labels.dtype == dtype
    assert labels[0, :, 0].tolist() == [bg] * 3 and labels[0, :, 2].tolist() == [top] * 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_maps(backend, dtype):
    maps, table, probs = _inputs(2, 4, 7, 7, True, seed=3, dtype=dtype)
    labels, best = _run(backend, maps, table, probs, (30, 30), 0.3)
    want = reference.upsample_labels_ref(maps, table, probs, (30, 30), 0.3)
    want_best = reference.upsample_argmax_ref(maps.float(), (30, 30))[0]
    assert torch.equal(labels, want)
    assert (best - want_best).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_maps(backend):
    maps, table, probs = _inputs(2, 6, 5, 9, True, seed=4)
    sliced = maps[:, ::2]  # non-contiguous K
    last = maps.to(memory_format=torch.channels_last)
    a = up(sliced, table[:, ::2], probs[:, ::2], (17, 23), 0.3, backend=backend)
    b = up(last, table, probs, (17, 23), 0.3, backend=backend)
    assert torch.equal(
        a, reference.upsample_labels_ref(sliced.contiguous(), table[:, ::2], probs[:, ::2], (17, 23), 0.3)
    )
    assert torch.equal(b, reference.upsample_labels_ref(maps, table, probs, (17, 23), 0.3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    maps, table = torch.rand(0, 3, 4, 4), torch.zeros(0, 3, dtype=torch.long)
    out = up(maps, table, None, (9, 7), 0.5, out_dtype=torch.uint8, backend=backend)
    assert out.shape == (0, 9, 7) and out.dtype == torch.uint8


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the interpreter, on NaN math
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_probs", [True, False])
@pytest.mark.parametrize("size", [(29, 29), (8, 8)])
def test_non_finite_maps_give_background(backend, with_probs, size):
    """A pixel whose 2x2 taps touch NaN/inf in any map is background; the rest is unaffected."""
    maps, table, probs = _inputs(1, 3, 8, 8, with_probs, seed=5)
    clean = up(maps, table, probs, size, 0.2, backend=backend, bg_label=7)
    maps[0, 1, 2, 3] = float("nan")
    maps[0, 0, 5, 5] = float("inf")
    maps[0, 2, 0, 7] = -float("inf")
    labels = up(maps, table, probs, size, 0.2, backend=backend, bg_label=7)
    bad = reference.nonfinite_pixels_ref(maps, size)
    assert torch.equal(labels, reference.upsample_labels_ref(maps, table, probs, size, 0.2, bg_label=7))
    assert bad.sum() >= 3 and (labels[bad] == 7).all()
    if size == (8, 8):  # a same-size resize is a copy: only the non-finite pixels themselves
        assert bad.sum() == 3
    assert torch.equal(labels[~bad], clean[~bad])
    assert (clean[bad] != 7).any()  # the rule, not the data, makes those pixels background


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_probability_gives_background(backend):
    maps, table, probs = _inputs(1, 3, 6, 6, True, seed=6)
    probs[0] = torch.tensor([0.9, float("nan"), 0.8])
    labels = up(maps, table, probs, (24, 24), 0.5, backend=backend)
    best = reference.upsample_argmax_ref(maps, (24, 24))[1][0]
    assert (best == 1).any() and (best != 1).any()
    assert (labels[0][best == 1] == 0).all() and (labels[0][best != 1] != 0).all()


def _maps():
    return torch.rand(2, 3, 4, 4)


def _table():
    return torch.ones(2, 3, dtype=torch.long)


BAD_CALLS = [
    (
        (_maps()[0], _table(), None, (8, 8), 0.5),
        {},
        "maps must have shape (B, K, h, w) (4 dims), got (3, 4, 4)",
    ),
    ((_maps().long(), _table(), None, (8, 8), 0.5), {}, "maps must be float32, float16 or bfloat16"),
    ((_maps(), _table().float(), None, (8, 8), 0.5), {}, "class_table must be an integer tensor"),
    ((_maps(), _table()[:, :2], None, (8, 8), 0.5), {}, "class_table (2, 2) must match maps (B, K) = (2, 3)"),
    ((_maps(), _table()[:1], None, (8, 8), 0.5), {}, "class_table (1, 3) must match maps (B, K) = (2, 3)"),
    ((_maps(), _table(), torch.rand(2, 4), (8, 8), 0.5), {}, "probs (2, 4) must match maps (B, K) = (2, 3)"),
    ((_maps(), _table(), torch.ones(2, 3, dtype=torch.int32), (8, 8), 0.5), {}, "probs must be float32"),
    ((_maps(), _table().to("meta"), None, (8, 8), 0.5), {}, "maps is on cpu but class_table is on meta"),
    (
        (_maps(), _table(), torch.rand(2, 3, device="meta"), (8, 8), 0.5),
        {},
        "maps is on cpu but probs is on meta",
    ),
    ((_maps(), _table(), None, (0, 8), 0.5), {}, "size must be a pair of positive ints (H, W), got (0, 8)"),
    ((_maps(), _table(), None, (8,), 0.5), {}, "size must be a pair of positive ints"),
    ((_maps(), _table(), None, (8.0, 8), 0.5), {}, "size must be a pair of positive ints"),
    ((_maps(), _table(), None, (8, 8), 1.5), {}, "bg_thresh must be a number in [0, 1], got 1.5"),
    ((_maps(), _table(), None, (8, 8), -0.1), {}, "bg_thresh must be a number in [0, 1]"),
    ((_maps(), _table(), None, (8, 8), float("nan")), {}, "bg_thresh must be a number in [0, 1]"),
    ((torch.rand(2, 0, 4, 4), _table()[:, :0], None, (8, 8), 0.5), {}, "maps must have K, h, w >= 1"),
    ((_maps(), _table(), None, (8, 8), 0.5), {"out_dtype": torch.int64}, "out_dtype must be torch.uint8"),
    (
        (_maps(), _table() * 300, None, (8, 8), 0.5),
        {"out_dtype": torch.uint8},
        "[300, 300], which does not fit",
    ),
    (
        (_maps(), _table(), None, (8, 8), 0.5),
        {"bg_label": -1, "out_dtype": torch.uint8},
        "bg_label span [-1, -1]",
    ),
    ((_maps(), _table(), None, (8, 8), 0.5), {"bg_label": 0.0}, "bg_label must be an int"),
]


@pytest.mark.parametrize("args,kwargs,message", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_inputs_raise_one_line_errors(args, kwargs, message):
    with pytest.raises(ZerosegError, match=re.escape(message)) as err:
        upsample_labels(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_reference_chunking_over_maps_keeps_first_on_ties(monkeypatch):
    """The reference interpolates a few maps at a time (dense vocabularies); chunks must not matter."""
    maps, table, _ = _inputs(1, 7, 5, 6, False, seed=7)
    maps[:, 5] = maps[:, 1] = maps[:, 1] + 0.5  # equal maps in different chunks
    whole = reference.upsample_argmax_ref(maps, (20, 18))
    monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", 2 * 20 * 18)  # two maps per chunk
    chunked = reference.upsample_argmax_ref(maps, (20, 18))
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    assert (chunked[1] == 1).any() and not (chunked[1] == 5).any()
    want, _, _ = _oracle(maps, table, None, (20, 18), 0.0)
    assert torch.equal(reference.upsample_labels_ref(maps, table, None, (20, 18), 0.0), want.int())
