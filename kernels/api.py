"""Public head ops: validate, pick the backend (`dispatch`), run the Triton kernels or the reference.

Semantics, NaN rules included, are defined once in `zeroseg.kernels.reference`; see its docstring.
"""

from __future__ import annotations

import torch

from zeroseg.errors import ZerosegError
from zeroseg.kernels import reference, validate
from zeroseg.kernels.dispatch import resolve_backend
from zeroseg.kernels.results import HeadResult, SimilarityResult

MAX_TRITON_TOPK = 16  # the Triton kernel keeps top-k in registers; larger k runs on the reference


def token_text_similarity(
    tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    *,
    topk: int = 1,
    return_probs: bool = False,
    backend: str | None = None,
) -> SimilarityResult:
    """Best class per token: softmax over classes of logit_scale x cos(token, text).

    tokens (B, N, D) and text (C, D) are float32/float16/bfloat16 and are L2-normalised inside;
    logit_scale is the multiplier (e.g. 100.0, not its log). Returns `max_prob` (B, N) float32 and
    `index` (B, N) int64 (ties -> lowest class), or (B, N, k) sorted descending for topk=k > 1, plus
    `probs` (B, N, C) float32 with return_probs=True. The Triton kernel computes the softmax online
    over class tiles and never stores (B, N, C) unless asked; it handles k <= 16 itself (top-k kept
    as a running sorted list merged tile by tile) and hands larger k to the reference.
    """
    validate.check_similarity_inputs(tokens, text, logit_scale, topk)
    if backend_for(backend, tokens.device) == "torch" or topk > MAX_TRITON_TOPK:
        return reference.token_text_similarity_ref(
            tokens, text, float(logit_scale), topk=topk, return_probs=return_probs
        )
    from zeroseg.kernels.triton_similarity import token_text_similarity_triton

    return token_text_similarity_triton(
        tokens, text, float(logit_scale), topk=topk, return_probs=return_probs
    )


def upsample_labels(
    maps: torch.Tensor,
    class_table: torch.Tensor,
    probs: torch.Tensor | None,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    out_dtype: torch.dtype = torch.int32,
    backend: str | None = None,
) -> torch.Tensor:
    """Label map (B, H, W): bilinear upsample of maps (B, K, h, w) to `size`, argmax over K, lookup.

    label = class_table[b, k*] where k* is the best map at the pixel (ties -> first map), or bg_label
    when its score is below bg_thresh; the score is probs[b, k*] (segment mode) or, with probs=None,
    the interpolated value of map k* (dense mode: maps are per-class probabilities). Interpolation
    is `F.interpolate(mode="bilinear", align_corners=False)` in fp32. Checks that every label fits
    out_dtype (this reads class_table's min and max, one device sync on CUDA).
    """
    size, bg_thresh = validate.check_upsample_inputs(maps, class_table, probs, size, bg_thresh, out_dtype)
    bg_label = validate.check_int(bg_label, "bg_label")
    validate.check_fits(bg_label, bg_label, out_dtype, "bg_label")
    if class_table.numel():
        lo, hi = int(class_table.min()), int(class_table.max())
        validate.check_fits(lo, hi, out_dtype, "class_table labels")
    return _upsample(maps, class_table, probs, size, bg_thresh, bg_label, out_dtype, backend)


def segment_head(
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
    backend: str | None = None,
) -> HeadResult:
    """ZeroSeg's head: name each segment token, then paint its assignment map.

    tokens (B, K, D) segment tokens; maps (B, K, h, w) their patch->segment assignment. Token k gets
    class c_k with probability p_k; pixels whose best map is k get label c_k + label_offset, or
    bg_label where p_k < bg_thresh. Returns labels (B, H, W), index (B, K) and prob (B, K).
    """
    validate.check_similarity_inputs(tokens, text, logit_scale, 1)
    validate.check_maps(maps)
    size = validate.check_size(size)
    bg_thresh = validate.check_unit_interval(bg_thresh, "bg_thresh")
    validate.check_same_device("tokens", tokens, "maps", maps)
    if tuple(tokens.shape[:2]) != tuple(maps.shape[:2]):
        raise ZerosegError(
            f"tokens (B, K) = {tuple(tokens.shape[:2])} and maps (B, K) = {tuple(maps.shape[:2])} disagree"
        )
    bg_label, label_offset = _check_labels(bg_label, label_offset, text.shape[0], out_dtype)
    sim = token_text_similarity(tokens, text, logit_scale, backend=backend)
    labels = _upsample(
        maps, sim.index + label_offset, sim.max_prob, size, bg_thresh, bg_label, out_dtype, backend
    )
    return HeadResult(labels, sim.index, sim.max_prob)


def dense_head(
    patch_tokens: torch.Tensor,
    text: torch.Tensor,
    logit_scale: float,
    size: tuple[int, int],
    bg_thresh: float,
    *,
    bg_label: int = 0,
    label_offset: int = 1,
    out_dtype: torch.dtype = torch.int32,
    backend: str | None = None,
) -> HeadResult:
    """MaskCLIP-style head on dense patch tokens (B, h, w, D): classes are the maps.

    Every patch token gets class probabilities (B, C, h, w, materialised at patch resolution only);
    they are upsampled, the best class c per pixel wins and the pixel gets c + label_offset, or
    bg_label where the interpolated probability of c is below bg_thresh. Returns labels (B, H, W),
    and per patch the best class index (B, h, w) and its probability (B, h, w).
    """
    validate.check_tensor(patch_tokens, "patch_tokens", 4, "(B, h, w, D)")
    b, h, w, d = patch_tokens.shape
    if h == 0 or w == 0:
        raise ZerosegError(f"patch_tokens must have h, w >= 1, got {tuple(patch_tokens.shape)}")
    tokens = patch_tokens.reshape(b, h * w, d)
    validate.check_similarity_inputs(tokens, text, logit_scale, 1)
    size = validate.check_size(size)
    bg_thresh = validate.check_unit_interval(bg_thresh, "bg_thresh")
    validate.check_label_dtype(out_dtype)
    c = text.shape[0]
    bg_label, label_offset = _check_labels(bg_label, label_offset, c, out_dtype)
    dev = tokens.device
    if backend_for(backend, dev) == "torch":
        return reference.dense_head_ref(
            patch_tokens, text, float(logit_scale), size, bg_thresh,
            bg_label=bg_label, label_offset=label_offset, out_dtype=out_dtype,
        )  # fmt: skip
    from zeroseg.kernels.triton_similarity import token_text_similarity_triton
    from zeroseg.kernels.triton_upsample import upsample_labels_triton

    maps = torch.empty((b, c, h, w), dtype=torch.float32, device=dev)
    sim = token_text_similarity_triton(
        tokens, text, float(logit_scale), return_probs=True, probs_out=maps.view(b, c, h * w).transpose(1, 2)
    )
    table = (torch.arange(c, device=dev, dtype=torch.int32) + label_offset).expand(b, c)
    labels = upsample_labels_triton(
        maps, table, None, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
    )
    return HeadResult(labels, sim.index.view(b, h, w), sim.max_prob.view(b, h, w))


def backend_for(backend: str | None, device: torch.device) -> str:
    """`"triton"` or `"torch"` for a call on `device` (see `zeroseg.kernels.dispatch`)."""
    return resolve_backend(backend, device)


def _upsample(maps, class_table, probs, size, bg_thresh, bg_label, out_dtype, backend) -> torch.Tensor:
    """Run the upsample on the chosen backend; inputs and label range already checked."""
    if backend_for(backend, maps.device) == "torch":
        return reference.upsample_labels_ref(
            maps, class_table, probs, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
        )
    from zeroseg.kernels.triton_upsample import upsample_labels_triton

    return upsample_labels_triton(
        maps, class_table, probs, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype
    )


def _check_labels(bg_label: object, label_offset: object, num_classes: int, out_dtype: torch.dtype):
    """bg_label and class labels label_offset .. label_offset + C - 1 fit out_dtype (no device sync)."""
    bg = validate.check_int(bg_label, "bg_label")
    off = validate.check_int(label_offset, "label_offset")
    validate.check_label_dtype(out_dtype)
    validate.check_fits(bg, bg, out_dtype, "bg_label")
    validate.check_fits(off, off + num_classes - 1, out_dtype, "class labels (label_offset + class index)")
    return bg, off
