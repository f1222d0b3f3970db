"""The PyTorch reference of ZeroSeg's inference head: the one place that defines its semantics.

These functions are the CPU path of `zeroseg.kernels` and the oracle every other implementation (the
Triton kernels, exported graphs, the model's inference) is tested against. They are written to be
read, not to be fast: plain torch, `F.interpolate` for the resize. They assume validated inputs; the
public functions in `zeroseg.kernels` check shapes, dtypes and devices before calling them.

Similarity (`token_text_similarity_ref`)
    t = normalize(tokens), e = normalize(text)   (L2, eps=1e-12, like `F.normalize`, in float32)
    e is rounded to the tokens' dtype: the products run at the tokens' precision (fp16 tokens ->
    fp16 text, as a tensor-core matmul would), always accumulated in float32.
    logits = logit_scale * t @ e.T               (B, N, C) float32
    probs = softmax(logits, dim=-1)
    index = argmax(logits), ties -> lowest class index; max_prob = probs[index]
    topk=k > 1: the k best classes ordered by logit descending, ties -> lower index first.

Label upsampling (`upsample_labels_ref`)
    up = F.interpolate(maps, size, mode="bilinear", align_corners=False) in float32
    k* = argmax over K of up (ties -> first map)
    score = probs[b, k*] if probs is given, else up[b, k*] (dense mode: maps are probability maps)
    label = class_table[b, k*] if score >= bg_thresh else bg_label

Non-finite inputs (both backends implement exactly this)
    * Similarity: a NaN or inf in a token, or in any text embedding, makes that token's logit row
      contain NaN (inf / inf after normalisation). Such a row gets `max_prob` NaN and all `probs` NaN
      (softmax propagates NaN, as in torch), and `index` = the first class whose logit is NaN: NaN
      counts as larger than every number, as in `torch.argmax`. For topk > 1 the NaN classes come
      first (lowest index first), then the others by logit; all their probabilities are NaN.
    * Upsampling: a pixel whose bilinear taps (the 2x2 source pixels it reads, see `source_taps`)
      hold a non-finite value in any of the K maps gets `bg_label`. A NaN score (e.g. a NaN entry of
      `probs`) is below every threshold, so it also gives `bg_label`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zeroseg.kernels.results import HeadResult, SimilarityResult

_NORM_EPS = 1e-12
# Upper bound on elements of one upsampled chunk, so dense mode with many classes stays in memory.
_CHUNK_ELEMENTS = 1 << 24


def normalized_text_ref(text: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Text embeddings L2-normalised in float32, then rounded to the tokens' dtype."""
    return F.normalize(text.float(), dim=-1, eps=_NORM_EPS).to(dtype)


def similarity_logits_ref(tokens: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Scaled cosine similarity (B, N, C) in float32 between tokens (B, N, D) and text (C, D)."""
    t = F.normalize(tokens.float(), dim=-1, eps=_NORM_EPS)
    e = normalized_text_ref(text, tokens.dtype).float()
    return logit_scale * (t @ e.T)


def token_text_similarity_ref(
    tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    *,
    topk: int = 1,
    return_probs: bool = False,
) -> SimilarityResult:
    """Softmax over classes of the scaled cosine similarity; best class (or top-k) per token."""
    logits = similarity_logits_ref(tokens, text, logit_scale)
    probs = torch.softmax(logits, dim=-1)
    # NaN ranks above every number (torch.argmax convention); only NaN logits can become +inf here.
    key = torch.where(torch.isnan(logits), torch.inf, logits)
    if topk == 1:
        index = key.argmax(dim=-1)
        max_prob = probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    else:
        # A stable sort keeps equal logits in class order, so ties go to the lower index.
        index = torch.sort(key, dim=-1, descending=True, stable=True).indices[..., :topk]
        max_prob = probs.gather(-1, index)
    return SimilarityResult(max_prob, index, probs if return_probs else None)


def source_taps(
    n_in: int, n_out: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (i0, i1) that `F.interpolate(bilinear, align_corners=False)` reads per output.

    src = (dst + 0.5) * (n_in / n_out) - 0.5 in float32, clamped at 0; i0 = floor(src) (at most
    n_in - 1), i1 = min(i0 + 1, n_in - 1). When n_in == n_out the resize is a copy: i0 = i1 = dst.
    """
    dst = torch.arange(n_out, device=device)
    if n_in == n_out:
        return dst, dst
    ratio = torch.tensor(np.float32(n_in) / np.float32(n_out), device=device)
    src = ((dst.float() + 0.5) * ratio - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    return i0, (i0 + 1).clamp_max(n_in - 1)


def nonfinite_pixels_ref(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool: output pixels whose bilinear taps touch a non-finite value in any map."""
    bad = ~torch.isfinite(maps).all(dim=1)  # (B, h, w)
    y0, y1 = source_taps(maps.shape[-2], size[0], maps.device)
    x0, x1 = source_taps(maps.shape[-1], size[1], maps.device)
    rows0, rows1 = bad[:, y0], bad[:, y1]
    return rows0[:, :, x0] | rows0[:, :, x1] | rows1[:, :, x0] | rows1[:, :, x1]


def upsample_argmax_ref(maps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Best interpolated value and its map index per output pixel, both (B, H, W).

    Interpolates a few maps at a time so that a dense vocabulary never needs all (B, K, H, W) at once;
    the strict `>` across chunks and `argmax` inside one keep the first map on ties.
    """
    b, k = maps.shape[:2]
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * size[0] * size[1]))
    best_val = torch.full((b, *size), -torch.inf, device=maps.device)
    best_idx = torch.zeros((b, *size), dtype=torch.long, device=maps.device)
    for k0 in range(0, k, chunk):
        up = F.interpolate(maps[:, k0 : k0 + chunk].float(), size=size, mode="bilinear", align_corners=False)
        idx = up.argmax(dim=1, keepdim=True)
        val = up.gather(1, idx).squeeze(1)
        better = (val > best_val) if k0 > 0 else torch.ones_like(val, dtype=torch.bool)
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx.squeeze(1) + k0, best_idx)
    return best_val, best_idx


def upsample_labels_ref(
    maps: torch.Tensor,
    class_table: torch.Tensor,
    probs: torch.Tensor | None,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    out_dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """Label map (B, H, W): bilinear upsample of K maps, argmax over K, class lookup, background."""
    best_val, best_idx = upsample_argmax_ref(maps, size)
    labels = class_table.long().gather(1, best_idx.flatten(1)).view_as(best_idx)
    if probs is None:
        score = best_val
    else:
        score = probs.float().gather(1, best_idx.flatten(1)).view_as(best_idx)
    keep = (score >= bg_thresh) & ~nonfinite_pixels_ref(maps, size)
    return torch.where(keep, labels, bg_label).to(out_dtype)


def segment_head_ref(
    tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    maps: torch.Tensor,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    label_offset: int = 1,
    out_dtype: torch.dtype = torch.int32,
) -> HeadResult:
    """ZeroSeg head: name the K segment tokens (B, K, D), then paint their maps (B, K, h, w)."""
    sim = token_text_similarity_ref(tokens, text, logit_scale)
    labels = upsample_labels_ref(
        maps, sim.index + label_offset, sim.max_prob, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
    )
    return HeadResult(labels, sim.index, sim.max_prob)


def dense_head_ref(
    patch_tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    label_offset: int = 1,
    out_dtype: torch.dtype = torch.int32,
) -> HeadResult:
    """MaskCLIP-style head: classify every patch token (B, h, w, D), upsample the class probabilities.

    The per-class probability maps (B, C, h, w) are upsampled, the best class per pixel wins, and a
    pixel whose interpolated probability of that class is below `bg_thresh` becomes background.
    """
    return dense_head_with(
        upsample_labels_ref, patch_tokens, text, logit_scale, size, bg_thresh,
        bg_label=bg_label, label_offset=label_offset, out_dtype=out_dtype,
    )  # fmt: skip


def patch_tokens_ref(segments: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) float32: every patch takes the token of the segment that owns it.

    segments (B, m, D) and one-hot maps (B, m, h, w): the einsum sums m products of which one is the
    token and the others are zero, so it is exact (the dense head's input in `zeroseg.Segmenter` and
    in every exported graph).
    """
    return torch.einsum("bmd,bmhw->bhwd", segments.float(), maps.float())


def dense_head_with(
    upsample, patch_tokens, text, logit_scale, size, bg_thresh, *, bg_label, label_offset, out_dtype
) -> HeadResult:
    """`dense_head_ref`'s composition with the upsampling done by `upsample` (an `upsample_labels_ref`
    twin, e.g. the vectorised CPU path): the dense head's semantics stay written once."""
    b, h, w, d = patch_tokens.shape
    sim = token_text_similarity_ref(patch_tokens.reshape(b, h * w, d), text, logit_scale, return_probs=True)
    c = text.shape[0]
    maps = sim.probs.transpose(1, 2).reshape(b, c, h, w)
    table = (torch.arange(c, device=maps.device) + label_offset).expand(b, c)
    labels = upsample(maps, table, None, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype)
    return HeadResult(labels, sim.index.view(b, h, w), sim.max_prob.view(b, h, w))


# ---- traceable variant (the exported graphs' head) ---------------------------------------------
# The functions above decide Python-side (chunk sizes from the shapes, numpy tap ratios, the
# equal-size copy), which `torch.export` cannot follow when the output size is a graph input. The
# variant below computes the same taps with tensor ops and interpolates with them explicitly
# (separably, in the order of PyTorch's CPU kernel: along W in each source row, then along H), so
# an exported graph reproduces the reference's tap indices and weights bit for bit instead of
# leaving them to a runtime's Resize. Interpolating along W on the h source rows first and then
# combining rows gives the same products and sums as PyTorch's kernel (which reads the 2 x 2 taps
# per output pixel) at a fraction of the gathers. tests/test_export_reference.py proves it equals
# the functions above.


def linear_taps_traceable(
    n_in: int | torch.SymInt, n_out: int | torch.SymInt, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Taps (i0, i1) and weights (w0, w1) of bilinear align_corners=False, as `F.interpolate` reads.

    ratio = n_in / n_out in float32; src = max((dst + 0.5) * ratio - 0.5, 0), evaluated in float64
    and rounded once to float32: PyTorch's CPU kernel contracts it into a fused multiply-add on FMA
    hosts (AVX2 / AVX-512 builds), and a plain float32 evaluation would differ from it in the last
    bit, enough to break the ties of one-hot maps the other way. w1 = src - i0, w0 = 1 - w1; equal
    sizes are a copy (i0 = i1 = dst, w1 = 0). Works with symbolic sizes (no Python branch).
    """
    dst = torch.arange(n_out, device=device)
    n_in_t = torch.full((), n_in, dtype=torch.float32, device=device)
    n_out_t = torch.full((), n_out, dtype=torch.float32, device=device)
    ratio = (n_in_t / n_out_t).double()
    src = ((dst.double() + 0.5) * ratio - 0.5).float().clamp_min(0.0)
    last = (n_in_t - 1).long()
    i0 = torch.minimum(src.floor().long(), last)
    same = n_in_t == n_out_t
    i1 = torch.where(same, i0, torch.minimum(i0 + 1, last))
    w1 = torch.where(same, 0.0, (src - i0.float()).clamp(0.0, 1.0))
    return i0, i1, 1.0 - w1, w1


def upsample_labels_traceable(
    maps: torch.Tensor,
    class_table: torch.Tensor,
    probs: torch.Tensor | None,
    size: tuple[int | torch.SymInt, int | torch.SymInt],
    bg_thresh: float | torch.Tensor,
    *,
    bg_label: int = 0,
    out_dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """`upsample_labels_ref`, exportable with a symbolic `size`.

    All K maps are interpolated at once (no chunking: K is the few segment tokens, or the classes of
    the dense head), and `bg_thresh` may be a 0-d tensor (a graph input). With `probs` None (dense
    mode: the maps are probability maps) the score is the interpolated value of the winning map.
    """
    maps = maps.float()
    y0, y1, wy0, wy1 = linear_taps_traceable(maps.shape[-2], size[0], maps.device)
    x0, x1, wx0, wx1 = linear_taps_traceable(maps.shape[-1], size[1], maps.device)
    # along W on the source rows first (cheap: h rows), then the two source rows of every output row
    cols = maps.index_select(3, x0) * wx0 + maps.index_select(3, x1) * wx1  # (B, K, h, W)
    up = cols.index_select(2, y0) * wy0[:, None] + cols.index_select(2, y1) * wy1[:, None]  # (B, K, H, W)
    best_idx = up.argmax(dim=1)  # ties -> first map
    labels = class_table.long().gather(1, best_idx.flatten(1)).view_as(best_idx)
    if probs is None:
        score = up.gather(1, best_idx.unsqueeze(1)).squeeze(1)
    else:
        score = probs.float().gather(1, best_idx.flatten(1)).view_as(best_idx)
    bad = ~torch.isfinite(maps).all(dim=1)  # (B, h, w): the taps' non-finite sources
    bad_cols = bad.index_select(2, x0) | bad.index_select(2, x1)  # (B, h, W)
    touched = bad_cols.index_select(1, y0) | bad_cols.index_select(1, y1)
    keep = (score >= bg_thresh) & ~touched
    return torch.where(keep, labels, bg_label).to(out_dtype)


def segment_head_traceable(
    tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    maps: torch.Tensor,
    size: tuple[int | torch.SymInt, int | torch.SymInt],
    bg_thresh: float | torch.Tensor,
    *,
    bg_label: int = 0,
    label_offset: int | torch.Tensor = 1,
    out_dtype: torch.dtype = torch.int32,
) -> HeadResult:
    """`segment_head_ref` for export: the same similarity, the traceable upsampling.

    `size`, `bg_thresh` and `label_offset` may be symbolic / 0-d tensors (graph inputs).
    """
    sim = token_text_similarity_ref(tokens, text, logit_scale)
    labels = upsample_labels_traceable(
        maps, sim.index + label_offset, sim.max_prob, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
    )
    return HeadResult(labels, sim.index, sim.max_prob)


def dense_head_traceable(
    patch_tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    size: tuple[int | torch.SymInt, int | torch.SymInt],
    bg_thresh: float | torch.Tensor,
    *,
    bg_label: int = 0,
    label_offset: int | torch.Tensor = 1,
    out_dtype: torch.dtype = torch.int32,
) -> HeadResult:
    """`dense_head_ref` for export: the same similarity and probability maps, the traceable upsampling.

    `size`, `bg_thresh` and `label_offset` may be symbolic / 0-d tensors (graph inputs). The class
    table is the class index plus `label_offset`, as in `dense_head_with`.
    """
    b, h, w, d = patch_tokens.shape
    sim = token_text_similarity_ref(patch_tokens.reshape(b, h * w, d), text, logit_scale, return_probs=True)
    c = text.shape[0]
    maps = sim.probs.transpose(1, 2).reshape(b, c, h, w)
    table = (torch.arange(c, device=maps.device) + label_offset).expand(b, c)
    labels = upsample_labels_traceable(
        maps, table, None, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
    )
    return HeadResult(labels, sim.index.view(b, h, w), sim.max_prob.view(b, h, w))
