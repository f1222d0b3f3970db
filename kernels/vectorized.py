"""The head's fast plain-torch path: the reference's labels bit for bit, without its full-size argmax.

`zeroseg.kernels.reference` upsamples all K maps to (B, K, H, W), reduces them with `argmax` over the
strided K dimension (PyTorch's slowest reduction layout) and gathers int64 labels at full size. This
module computes the same labels (`backend="vectorized"`, the default on CPU) two ways:

General path (any device, any maps)
    The reference's own `F.interpolate` calls, chunk for chunk, so every interpolated value is the
    reference's; `Tensor.max(dim=1)` instead of `argmax` (same first-index rule on ties and NaN, a
    fraction of the time); and the per-map decisions folded into a K-entry table: in segment mode
    `table[k] = class_table[k] if probs[k] >= bg_thresh else bg_label`, so the full-size work is one
    gather from a small table. An equal-size resize reads the maps directly (bilinear is then a copy).

Owner shortcut (CPU, segment mode; ZeroSeg's one-hot assignment maps)
    A source pixel is *owned* by map s when s is there in [2**-100, 2**100] and every other map is
    exactly 0. Where all four bilinear taps of an output pixel share the owner s, map s interpolates
    to a positive value and every other map to 0, whatever the rounding, so s wins: the label is
    table[s] with no arithmetic. The taps depend on the output row only through its source-row pair
    and on the column only through its column pair, so those pixels are painted by copying rows of a
    (2h, W) table. The other pixels get the exact values of PyTorch's CPU kernel, recomputed there
    only, for at most the four owners of their taps (segment borders: any other map is 0 there and
    some owner is positive) or for all K maps (soft maps, non-finite values). PyTorch's generic
    kernel interpolates along W, then H, each step `fma(t0, w0, t1 * w1)` on FMA hosts, which
    `torch.addcmul` reproduces. The shortcut runs only when `F.interpolate` would pick that kernel for
    the call (see `_generic_kernel`) and a probe at first use finds the recomputation bit-identical on
    this host; it hands over to the general path when under half the source pixels have an owner or
    the pixels to recompute would cost more than interpolating everything.

Both paths apply the reference's non-finite rule (pixels whose taps touch NaN/inf -> bg_label), and
only when the small maps are not all finite.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from zeroseg.kernels import reference

_TAU = 2.0**-100  # an owner's value is at least this (far from underflow once weighted) ...
_BIG = 2.0**100  # ... and every value at an owned pixel at most this in size (no overflow)


def upsample_labels_vec(
    maps: torch.Tensor,
    class_table: torch.Tensor,
    probs: torch.Tensor | None,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    out_dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """`reference.upsample_labels_ref`, the same labels for every input, faster (see module docstring).

    Assumes validated inputs whose labels fit out_dtype (the public `upsample_labels` checks them).
    """
    b, k = maps.shape[:2]
    if b == 0:
        return torch.empty((0, *size), dtype=out_dtype, device=maps.device)
    if probs is None:  # dense mode: the score is the interpolated value itself
        best_val, best_idx = best_maps(maps, size)
        labels = class_table.to(out_dtype).gather(1, best_idx.flatten(1)).view_as(best_idx)
        labels.masked_fill_(~(best_val >= bg_thresh), bg_label)
    else:
        table = torch.where(probs.float() >= bg_thresh, class_table, bg_label).to(out_dtype)
        labels = _owner_labels(maps, table, size, bg_label)
        if labels is None:
            best_idx = best_maps(maps, size)[1]
            labels = table.gather(1, best_idx.flatten(1)).view_as(best_idx)
    touched = nonfinite_pixels(maps, size)
    if touched is not None:
        labels.masked_fill_(touched, bg_label)
    return labels


def best_maps(maps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`reference.upsample_argmax_ref`: best interpolated value and its map index, both (B, H, W).

    The same chunks and `F.interpolate` calls as the reference (so the same values), reduced with
    `max(dim=1)`, which keeps the first maximum (and the first NaN) exactly as `argmax` does.
    """
    b, k = maps.shape[:2]
    chunk = max(1, reference._CHUNK_ELEMENTS // max(1, b * size[0] * size[1]))
    best_val = best_idx = None
    for k0 in range(0, k, chunk):
        part = maps[:, k0 : k0 + chunk].float()
        if tuple(part.shape[-2:]) != tuple(size):
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        val, idx = part.max(dim=1)
        if best_val is None:
            best_val, best_idx = val, idx
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx + k0, best_idx)
    return best_val, best_idx


def nonfinite_pixels(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
    """`reference.nonfinite_pixels_ref`, computed separably; None when every map value is finite."""
    bad = ~torch.isfinite(maps).all(dim=1)  # (B, h, w)
    if not bool(bad.any()):
        return None
    y0, y1 = reference.source_taps(maps.shape[-2], size[0], maps.device)
    x0, x1 = reference.source_taps(maps.shape[-1], size[1], maps.device)
    cols = bad.index_select(2, x0) | bad.index_select(2, x1)  # (B, h, W)
    return cols.index_select(1, y0) | cols.index_select(1, y1)


# ---- the owner shortcut ---------------------------------------------------------------------------


class _Cols(NamedTuple):
    """Column taps and weights of PyTorch's CPU kernel along W."""

    x0: torch.Tensor
    x1: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor


class _Rows(NamedTuple):
    """Output rows grouped by the pair of source rows they read.

    Pair p < h reads source rows (p, min(p + 1, h - 1)); pair h + i reads (i, i): the clamped bottom
    rows, equal-size resizes and, for finite bounded maps (`merged`), every row whose second weight
    is exactly 0 (then fma(t0, 1, t1 * 0) = t0 whatever row t1 is). `pair_of[y]` is output row y's
    pair; `rows[:, p]` lists pair p's output rows, padded with H (a spare row), and `w0`, `w1` their
    weights (0 on padding).
    """

    pair_of: torch.Tensor  # (H,) int64
    src0: torch.Tensor  # (2h,) int64
    src1: torch.Tensor  # (2h,) int64
    used: torch.Tensor  # (2h,) bool: some output row reads the pair
    rows: torch.Tensor  # (R, 2h) int64
    w0: torch.Tensor  # (R, 2h) float32
    w1: torch.Tensor  # (R, 2h) float32


@functools.lru_cache(maxsize=64)
def _col_plan(n_in: int, n_out: int, device: torch.device) -> _Cols:
    return _Cols(*reference.linear_taps_traceable(n_in, n_out, device))


@functools.lru_cache(maxsize=64)
def _row_plan(n_in: int, n_out: int, device: torch.device, merged: bool) -> _Rows:
    y0, y1, w0, w1 = reference.linear_taps_traceable(n_in, n_out, device)
    pair_of = y0 + n_in * ((y1 == y0) | ((w1 == 0) & merged)).long()
    counts = torch.bincount(pair_of, minlength=2 * n_in)
    order = torch.argsort(pair_of, stable=True)
    slot = torch.arange(n_out, device=device) - (torch.cumsum(counts, 0) - counts)[pair_of[order]]
    rows = torch.full((int(counts.max()), 2 * n_in), n_out, dtype=torch.long, device=device)
    rows[slot, pair_of[order]] = order
    pad = torch.zeros(1, device=device)
    src0 = torch.arange(2 * n_in, device=device) % n_in
    src1 = torch.cat([(src0[:n_in] + 1).clamp_max(n_in - 1), src0[n_in:]])
    return _Rows(
        pair_of, src0, src1, counts > 0, rows, torch.cat([w0, pad])[rows], torch.cat([w1, pad])[rows]
    )


def _generic_kernel(maps: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether `F.interpolate(maps, size, mode="bilinear")` on these CPU float32 maps runs PyTorch's
    generic (separable-order) kernel, not its vectorised channels-last one.

    PyTorch (`upsample_bilinear2d_kernel_impl_float`) picks the channels-last kernel for inputs in that
    memory format with more than 3 channels, for outputs with H + W <= 128, and for exactly 3 channels
    on one thread; that kernel sums the four taps with product weights, in another rounding order.
    """
    c = maps.shape[1]
    if size[0] + size[1] <= 128 or (c == 3 and torch.get_num_threads() == 1):
        return False
    return not (c > 3 and maps.is_contiguous(memory_format=torch.channels_last))


def _border_values(
    m: torch.Tensor, cols: _Cols, rows: _Rows, pair: torch.Tensor, col: torch.Tensor, cand: torch.Tensor
) -> torch.Tensor:
    """Values (S, R, P) of candidate maps `cand` (S, P) of m (K, h, w) at the output pixels of P
    (pair, column) entries, as PyTorch's generic CPU kernel computes them: along W on the two source
    rows, fma(m[x0], w0, m[x1] * w1), then across them alike."""
    h, w = m.shape[1:]
    flat = m.reshape(-1)
    xa, xb, wa, wb = (t.take(col) for t in cols)
    base = cand * (h * w)

    def along_w(src: torch.Tensor) -> torch.Tensor:
        row = base + src * w
        return torch.addcmul(flat.take(row + xb) * wb, flat.take(row + xa), wa).unsqueeze(1)

    t0, t1 = along_w(rows.src0.take(pair)), along_w(rows.src1.take(pair))
    return torch.mul(t1, rows.w1.index_select(1, pair)).addcmul_(t0, rows.w0.index_select(1, pair))


def _paint(
    m: torch.Tensor, table: torch.Tensor, size: tuple[int, int], bg_label: int, merged: bool
) -> torch.Tensor | None:
    """Labels (H, W) of one image's maps m (K, h, w) float32 with per-map labels `table` (K,), or
    None when too few pixels have an owner for the shortcut to beat the general path."""
    k, h, w = m.shape
    height, width = size
    cols, rows = _col_plan(w, width, m.device), _row_plan(h, height, m.device, merged)
    owned = (m >= _TAU) & (m <= _BIG)
    one = (owned.sum(0) == 1) & (owned | (m == 0)).all(0)
    if 2 * int(one.sum()) < h * w:
        return None
    owner = torch.where(one, (owned * torch.arange(k, device=m.device)[:, None, None]).sum(0), k)
    a, b = owner.index_select(1, cols.x0), owner.index_select(1, cols.x1)  # (h, W); k: no owner
    along = torch.where(a == b, a, k)  # the owner of both column taps of a source row
    below = along.index_select(0, rows.src1[:h])
    pairs = torch.cat([torch.where(along == below, along, k), along])  # (2h, W): of all four taps
    pairs.masked_fill_(~rows.used[:, None], 0)
    flat = torch.empty((height + 1) * width, dtype=table.dtype, device=m.device)  # + a spare row
    labels = flat[: height * width].view(height, width)
    lut = torch.cat([table, table.new_full((1,), bg_label)])
    torch.index_select(lut.take(pairs), 0, rows.pair_of, out=labels)
    border = (pairs == k).view(-1).nonzero().squeeze(1)
    if not border.numel():
        return labels
    pair, col = border // width, border % width
    s0, s1 = rows.src0.take(pair) * width + col, rows.src1.take(pair) * width + col
    taps = torch.stack([a.take(s0), b.take(s0), a.take(s1), b.take(s1)])  # (4, P)
    mixed = (taps < k).all(0)  # four owned taps: only their owners can win (the others are 0 there)
    n_mixed = int(mixed.sum()) if k > 4 else 0  # (with 4 maps or fewer, compare them all)
    if rows.rows.shape[0] * (4 * n_mixed + k * (border.numel() - n_mixed)) > k * height * width // 2:
        return None  # recomputing this many pixels costs more than the general path
    # candidates in map order, so that max keeps the first of equal values as argmax does
    if n_mixed == 0:
        groups = [(pair, col, None)]
    elif n_mixed == border.numel():
        groups = [(pair, col, taps.sort(0).values)]
    else:
        rest = ~mixed
        groups = [(pair[mixed], col[mixed], taps[:, mixed].sort(0).values), (pair[rest], col[rest], None)]
    for p, c, cand in groups:
        if not p.numel():
            continue
        if cand is None:
            cand = torch.arange(k, device=m.device)[:, None].expand(k, p.numel())
        winner = table.take(cand).gather(0, _border_values(m, cols, rows, p, c, cand).max(dim=0).indices)
        flat.scatter_(0, rows.rows.index_select(1, p).mul_(width).add_(c).view(-1), winner.view(-1))
    return labels


def _owner_labels(
    maps: torch.Tensor, table: torch.Tensor, size: tuple[int, int], bg_label: int
) -> torch.Tensor | None:
    """Segment-mode labels (B, H, W) by the owner shortcut, or None where it does not apply."""
    b, k = maps.shape[:2]
    chunk = reference._CHUNK_ELEMENTS // max(1, b * size[0] * size[1])
    if maps.device.type != "cpu" or k > chunk:
        return None
    m = maps.float()
    if not _generic_kernel(m, size) or not _recomputation_exact():
        return None
    merged = bool(m.abs().amax() <= _BIG)  # all finite and bounded: zero weights read nothing
    labels = []
    for i in range(b):
        one = _paint(m[i], table[i], size, bg_label, merged)
        if one is None:
            return None
        labels.append(one)
    return labels[0][None] if b == 1 else torch.stack(labels)


@functools.cache
def _recomputation_exact() -> bool:
    """Whether `_border_values` reproduces `F.interpolate` bit for bit on this host (probed once)."""
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 7, 9, generator=g)
    size = (61, 83)  # H + W > 128, 2 channels: the generic kernel
    want = F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0].view(2, -1)
    cols, rows = _col_plan(9, 83, m.device), _row_plan(7, 61, m.device, False)
    entries = torch.arange(2 * 7 * 83)
    pair, col = entries // 83, entries % 83
    values = _border_values(m, cols, rows, pair, col, torch.arange(2)[:, None].expand(2, entries.numel()))
    dest = rows.rows.index_select(1, pair) * 83 + col
    real = dest < 61 * 83
    return bool(torch.equal(values[:, real], want[:, dest[real]]))
