"""Fused token x text similarity: cosine, scale, online softmax over class tiles, argmax / top-k.

Never stores the (B, N, C) logits unless the caller asks for the probabilities. Three kernels:

1. `_sim_stats_kernel`, grid (row blocks, class splits): per block of tokens, the token norms, then
   a loop over class tiles of `tl.dot` (fp32 accumulation) keeping the online-softmax running max
   `m` and sum `l` and the running best class (top-k: a running sorted list merged tile by tile).
   With few tokens (the K=8 segment tokens) the classes are split over several programs so that
   a big vocabulary still fills the GPU ("split-K" as in flash-decoding).
2. `_sim_combine_kernel`: merges the splits' (m, l, top-k) into the final probability and index.
3. `_sim_probs_kernel` (only with return_probs): recomputes the logits tile by tile and writes
   exp(logit - m) / l, through strides, so dense mode can write (B, C, N) maps directly.

Semantics are those of `reference.token_text_similarity_ref`, including its NaN rule: NaN logits
rank as +inf (first NaN wins), and a row holding one gets NaN probabilities.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from zeroseg.kernels.reference import normalized_text_ref
from zeroseg.kernels.results import SimilarityResult

_BIG = tl.constexpr(2**30)  # "no class" index sentinel (a global must be constexpr in a kernel)


@triton.jit
def _merge_topk(top_v, top_i, cand_v, cand_i, cand_ok, TOPK: tl.constexpr, KP: tl.constexpr):
    """Merge candidates (BM, X) into a sorted list (BM, KP); order: key descending, index ascending."""
    kcol = tl.arange(0, KP)[None, :]
    new_v = tl.full(top_v.shape, float("-inf"), tl.float32)
    new_i = tl.full(top_i.shape, _BIG, tl.int32)
    list_ok = top_i < _BIG
    for r in tl.static_range(TOPK):
        cv = tl.max(tl.where(cand_ok, cand_v, float("-inf")), axis=1)
        ci = tl.min(tl.where(cand_ok & (cand_v == cv[:, None]), cand_i, _BIG), axis=1)
        lv = tl.max(tl.where(list_ok, top_v, float("-inf")), axis=1)
        li = tl.min(tl.where(list_ok & (top_v == lv[:, None]), top_i, _BIG), axis=1)
        take_c = (ci < _BIG) & ((li == _BIG) | (cv > lv) | ((cv == lv) & (ci < li)))
        v = tl.where(take_c, cv, lv)
        i = tl.where(take_c, ci, li)
        new_v = tl.where(kcol == r, v[:, None], new_v)
        new_i = tl.where(kcol == r, i[:, None], new_i)
        cand_ok = cand_ok & ~(take_c[:, None] & (cand_i == ci[:, None]))
        list_ok = list_ok & ~((~take_c)[:, None] & (top_i == li[:, None]))
    return new_v, new_i


@triton.jit
def _token_rows(x_ptr, rows, N, s_xb, s_xn):
    """Pointer offsets of flattened token rows (b * N + n) for a strided (B, N, D) tensor."""
    return x_ptr + (rows // N).to(tl.int64) * s_xb + (rows % N).to(tl.int64) * s_xn


@triton.jit
def _logits_tile(
    x_rows, row_ok, e_ptr, cols, col_ok, D, s_xd, s_ec, s_ed,
    UPCAST: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Raw dot products (BLOCK_M, BLOCK_C) of token rows with normalised text rows, fp32 accumulation."""
    acc = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        d_ok = rd < D
        x = tl.load(x_rows[:, None] + rd[None, :] * s_xd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        e = tl.load(
            e_ptr + cols[None, :] * s_ec + rd[:, None] * s_ed, mask=col_ok[None, :] & d_ok[:, None], other=0.0
        )
        if UPCAST:  # the interpreter has no bf16 matmul
            x = x.to(tl.float32)
            e = e.to(tl.float32)
        if IEEE:  # fp32 inputs: full fp32 products, not TF32 (cos x 100 would lose 2 digits)
            acc = tl.dot(x, e, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, e, acc)
    return acc


@triton.jit
def _inv_norms(x_rows, row_ok, D, s_xd, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """1 / max(||x||, 1e-12) per token row, in fp32 (the `F.normalize` rule)."""
    sumsq = tl.zeros((BLOCK_M,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_rows[:, None] + rd[None, :] * s_xd, mask=row_ok[:, None] & (rd < D)[None, :], other=0.0)
        x = x.to(tl.float32)
        sumsq += tl.sum(x * x, axis=1)
    return 1.0 / tl.maximum(tl.sqrt(sumsq), 1e-12)


@triton.jit
def _sim_stats_kernel(
    x_ptr, e_ptr, inv_ptr, m_ptr, l_ptr, tv_ptr, ti_ptr,
    M, N, C, D, chunk, scale,
    s_xb, s_xn, s_xd, s_ec, s_ed,
    TOPK: tl.constexpr, KP: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x_rows = _token_rows(x_ptr, rows, N, s_xb, s_xn)
    inv = _inv_norms(x_rows, row_ok, D, s_xd, BLOCK_M, BLOCK_D)
    if pid_s == 0:
        tl.store(inv_ptr + rows, inv, mask=row_ok)
    row_scale = inv * scale

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    best_v = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    best_i = tl.zeros((BLOCK_M,), tl.int32)
    top_v = tl.full((BLOCK_M, KP), float("-inf"), tl.float32)
    top_i = tl.full((BLOCK_M, KP), _BIG, tl.int32)
    c_start = pid_s * chunk
    c_end = tl.minimum(c_start + chunk, C)
    for c0 in range(c_start, c_end, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < c_end
        acc = _logits_tile(x_rows, row_ok, e_ptr, cols, col_ok, D, s_xd, s_ec, s_ed,
                           UPCAST, IEEE, BLOCK_M, BLOCK_C, BLOCK_D)  # fmt: skip
        logits = acc * row_scale[:, None]
        key = tl.where(logits != logits, float("inf"), logits)  # NaN ranks first
        key = tl.where(col_ok[None, :], key, float("-inf"))
        tile_max = tl.max(key, axis=1)
        m_new = tl.maximum(m_i, tile_max)
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(key - m_new[:, None]), axis=1)
        m_i = m_new
        if TOPK == 1:
            tile_i = tl.min(tl.where(key == tile_max[:, None], cols[None, :], _BIG), axis=1)
            better = (tile_max > best_v) | (c0 == c_start)  # strict: earlier tiles win ties
            best_v = tl.where(better, tile_max, best_v)
            best_i = tl.where(better, tile_i, best_i)
        else:
            cand_i = tl.broadcast_to(cols[None, :], (BLOCK_M, BLOCK_C))
            cand_ok = tl.broadcast_to(col_ok[None, :], (BLOCK_M, BLOCK_C))
            top_v, top_i = _merge_topk(top_v, top_i, key, cand_i, cand_ok, TOPK, KP)

    out = pid_s * M + rows
    tl.store(m_ptr + out, m_i, mask=row_ok)
    tl.store(l_ptr + out, l_i, mask=row_ok)
    if TOPK == 1:
        tl.store(tv_ptr + out, best_v, mask=row_ok)
        tl.store(ti_ptr + out, best_i, mask=row_ok)
    else:
        kk = tl.arange(0, KP)[None, :]
        tl.store(tv_ptr + out[:, None] * KP + kk, top_v, mask=row_ok[:, None])
        tl.store(ti_ptr + out[:, None] * KP + kk, top_i, mask=row_ok[:, None])


@triton.jit
def _sim_combine_kernel(
    m_ptr, l_ptr, tv_ptr, ti_ptr, mf_ptr, lf_ptr, prob_ptr, idx_ptr, M, S,
    TOPK: tl.constexpr, KP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    s = tl.arange(0, BLOCK_S)
    ok = row_ok[:, None] & (s < S)[None, :]
    m_s = tl.load(m_ptr + s[None, :] * M + rows[:, None], mask=ok, other=float("-inf"))
    l_s = tl.load(l_ptr + s[None, :] * M + rows[:, None], mask=ok, other=0.0)
    m = tl.where(row_ok, tl.max(m_s, axis=1), 0.0)  # padding rows: avoid inf - inf
    l_tot = tl.sum(tl.where(ok, l_s * tl.exp(m_s - m[:, None]), 0.0), axis=1)
    l_tot = tl.where(row_ok, l_tot, 1.0)
    # Candidates: every split's sorted list, flattened to (BLOCK_M, BLOCK_S * KP).
    j = tl.arange(0, BLOCK_S * KP)
    js = j // KP
    cand_ok = row_ok[:, None] & (js < S)[None, :]
    src = js[None, :] * (M * KP) + rows[:, None] * KP + (j % KP)[None, :]
    cand_v = tl.load(tv_ptr + src, mask=cand_ok, other=float("-inf"))
    cand_i = tl.load(ti_ptr + src, mask=cand_ok, other=_BIG)
    cand_ok = cand_ok & (cand_i < _BIG)
    top_v = tl.full((BLOCK_M, KP), float("-inf"), tl.float32)
    top_i = tl.full((BLOCK_M, KP), _BIG, tl.int32)
    top_v, top_i = _merge_topk(top_v, top_i, cand_v, cand_i, cand_ok, TOPK, KP)
    nan_row = m == float("inf")  # only a NaN logit becomes +inf
    prob = tl.exp(top_v - m[:, None]) / l_tot[:, None]
    prob = tl.where(nan_row[:, None], float("nan"), prob)
    kk = tl.arange(0, KP)[None, :]
    out_ok = row_ok[:, None] & (kk < TOPK)
    tl.store(prob_ptr + rows[:, None] * TOPK + kk, prob, mask=out_ok)
    tl.store(idx_ptr + rows[:, None] * TOPK + kk, top_i.to(tl.int64), mask=out_ok)
    tl.store(mf_ptr + rows, m, mask=row_ok)
    tl.store(lf_ptr + rows, l_tot, mask=row_ok)


@triton.jit
def _sim_probs_kernel(
    x_ptr, e_ptr, inv_ptr, mf_ptr, lf_ptr, p_ptr,
    M, N, C, D, scale,
    s_xb, s_xn, s_xd, s_ec, s_ed, s_pb, s_pn, s_pc,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < M
    col_ok = cols < C
    x_rows = _token_rows(x_ptr, rows, N, s_xb, s_xn)
    acc = _logits_tile(x_rows, row_ok, e_ptr, cols, col_ok, D, s_xd, s_ec, s_ed,
                       UPCAST, IEEE, BLOCK_M, BLOCK_C, BLOCK_D)  # fmt: skip
    inv = tl.load(inv_ptr + rows, mask=row_ok, other=0.0)
    m = tl.load(mf_ptr + rows, mask=row_ok, other=0.0)
    l_tot = tl.load(lf_ptr + rows, mask=row_ok, other=1.0)
    logits = acc * (inv * scale)[:, None]
    key = tl.where(logits != logits, float("inf"), logits)
    p = tl.exp(key - m[:, None]) / l_tot[:, None]
    p = tl.where((m == float("inf"))[:, None], float("nan"), p)
    dst = (rows // N).to(tl.int64)[:, None] * s_pb + (rows % N).to(tl.int64)[:, None] * s_pn
    tl.store(p_ptr + dst + cols[None, :].to(tl.int64) * s_pc, p, mask=row_ok[:, None] & col_ok[None, :])


def is_interpreted() -> bool:
    """True when these kernels run in Triton's interpreter (TRITON_INTERPRET=1 at triton import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_sim_stats_kernel, InterpretedFunction)


def _blocks(m: int, c: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_C, BLOCK_D, num_warps): small row tiles for segment tokens, GEMM tiles for dense."""
    block_d = 32 if dtype == torch.float32 else 64
    if is_interpreted():  # the interpreter pays per program, not per element: few big programs
        return 64 if m > 16 else 16, 64, 128, 4
    if m <= 16:
        return 16, 64, block_d, 4
    if m >= 2048 and c >= 256:
        return 128, 128, block_d, 8
    return 64, 64, block_d, 4


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_splits(m_blocks: int, c_tiles: int, device: torch.device) -> int:
    """Class splits per row block so that about two programs per SM run (1 in the interpreter)."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(c_tiles, -(-2 * sms // m_blocks)))


def token_text_similarity_triton(
    tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    *,
    topk: int = 1,
    return_probs: bool = False,
    probs_out: torch.Tensor | None = None,
    num_splits: int | None = None,
) -> SimilarityResult:
    """Triton implementation of `token_text_similarity` (validated inputs, small topk: kept in registers).

    probs_out: optional preallocated (B, N, C) float32 tensor of any strides that receives the
    probabilities (dense mode passes a transposed view of (B, C, N) maps). num_splits: force the
    number of class splits (tests use it to exercise the split path in the interpreter).
    """
    b, n, d = tokens.shape
    c = text.shape[0]
    m_rows = b * n
    dev = tokens.device
    lead = (b, n) if topk == 1 else (b, n, topk)
    if m_rows == 0:
        return _empty_result(lead, (b, n, c), dev, return_probs=return_probs, probs_out=probs_out)
    interp = is_interpreted()
    upcast = interp and tokens.dtype == torch.bfloat16
    # Text: normalised once in fp32, then stored in the tokens' dtype so tl.dot sees one input type.
    text_n = normalized_text_ref(text, tokens.dtype).contiguous()
    block_m, block_c, block_d, warps = _blocks(m_rows, c, tokens.dtype)
    m_blocks = triton.cdiv(m_rows, block_m)
    c_tiles = triton.cdiv(c, block_c)
    splits = num_splits if num_splits is not None else _num_splits(m_blocks, c_tiles, dev)
    splits = max(1, min(splits, c_tiles))
    chunk = triton.cdiv(c_tiles, splits) * block_c
    splits = triton.cdiv(c, chunk)
    kp = triton.next_power_of_2(topk)

    f32 = dict(dtype=torch.float32, device=dev)
    inv = torch.empty(m_rows, **f32)
    m_part = torch.empty((splits, m_rows), **f32)
    l_part = torch.empty((splits, m_rows), **f32)
    tv = torch.empty((splits, m_rows, kp), **f32)
    ti = torch.empty((splits, m_rows, kp), dtype=torch.int32, device=dev)
    consts = dict(UPCAST=upcast, IEEE=tokens.dtype == torch.float32)
    xs = tokens.stride()
    _sim_stats_kernel[(m_blocks, splits)](
        tokens, text_n, inv, m_part, l_part, tv, ti,
        m_rows, n, c, d, chunk, float(logit_scale),
        xs[0], xs[1], xs[2], text_n.stride(0), text_n.stride(1),
        TOPK=topk, KP=kp, BLOCK_M=block_m, BLOCK_C=block_c, BLOCK_D=block_d, num_warps=warps, **consts,
    )  # fmt: skip

    prob, index, m_fin, l_fin = _combine_splits(m_part, l_part, tv, ti, topk)

    probs = None
    if return_probs:
        probs = probs_out if probs_out is not None else torch.empty((b, n, c), **f32)
        ps = probs.stride()
        _sim_probs_kernel[(m_blocks, c_tiles)](
            tokens, text_n, inv, m_fin, l_fin, probs,
            m_rows, n, c, d, float(logit_scale),
            xs[0], xs[1], xs[2], text_n.stride(0), text_n.stride(1), ps[0], ps[1], ps[2],
            BLOCK_M=block_m, BLOCK_C=block_c, BLOCK_D=block_d, num_warps=warps, **consts,
        )  # fmt: skip
    return SimilarityResult(prob.view(lead), index.view(lead), probs)


def _empty_result(
    lead: tuple[int, ...],
    probs_shape: tuple[int, int, int],
    dev: torch.device,
    *,
    return_probs: bool,
    probs_out: torch.Tensor | None,
) -> SimilarityResult:
    """The result for zero tokens (no kernel launch: a grid of zero blocks is invalid)."""
    probs = None
    if return_probs:
        probs = (
            probs_out if probs_out is not None else torch.empty(probs_shape, dtype=torch.float32, device=dev)
        )
    return SimilarityResult(
        torch.empty(lead, dtype=torch.float32, device=dev),
        torch.empty(lead, dtype=torch.long, device=dev),
        probs,
    )


def _combine_splits(
    m_part: torch.Tensor, l_part: torch.Tensor, tv: torch.Tensor, ti: torch.Tensor, topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge the per-split softmax statistics and top-k candidates of the stats kernel.

    Args:
        m_part, l_part: (splits, M) running max and sum of exp of each class split.
        tv, ti: (splits, M, KP) each split's top-k values and class indices.
        topk: how many classes to keep per token.

    Returns:
        (M, topk) probabilities and class indices, and the (M,) global max and sum of exp that the
        probabilities kernel normalises with.
    """
    splits, m_rows, kp = tv.shape
    f32 = dict(dtype=torch.float32, device=tv.device)
    prob = torch.empty((m_rows, topk), **f32)
    index = torch.empty((m_rows, topk), dtype=torch.long, device=tv.device)
    m_fin = torch.empty(m_rows, **f32)
    l_fin = torch.empty(m_rows, **f32)
    comb_m = 32
    _sim_combine_kernel[(triton.cdiv(m_rows, comb_m),)](
        m_part, l_part, tv, ti, m_fin, l_fin, prob, index, m_rows, splits,
        TOPK=topk, KP=kp, BLOCK_M=comb_m, BLOCK_S=triton.next_power_of_2(splits),
    )  # fmt: skip
    return prob, index, m_fin, l_fin
