"""Public head ops: validate, pick the backend (`dispatch`), run the Triton kernels, the vectorised
plain-torch path (`zeroseg.kernels.vectorized`) or the reference.

Semantics, NaN rules included, are defined once in `zeroseg.kernels.reference`; see its docstring.
"""

from __future__ import annotations

import torch

from zeroseg.errors import ZerosegError
from zeroseg.kernels import reference, validate, vectorized
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

    The Triton kernel computes the softmax online over class tiles and never stores (B, N, C)
    unless asked; it handles k <= 16 itself (top-k kept as a running sorted list merged tile by
    tile) and hands larger k to the reference.

    Args:
        tokens: (B, N, D) float32/float16/bfloat16 tokens; L2-normalised inside.
        text: (C, D) class embeddings, same dtypes; L2-normalised inside.
        logit_scale: the multiplier of the cosines (e.g. 100.0, not its log).
        topk: how many best classes to return per token, 1 <= topk <= C.
        return_probs: also return the full softmax.
        backend: "auto" / "triton" / "vectorized" / "torch" (default: `$ZEROSEG_HEAD_BACKEND`, see
            `dispatch`).

    Returns:
        A `SimilarityResult`: `max_prob` (B, N) float32 and `index` (B, N) int64 (ties -> lowest
        class), or (B, N, k) sorted descending for topk=k > 1, plus `probs` (B, N, C) float32 with
        return_probs=True (else None).

    Raises:
        ZerosegError: bad shapes, dtypes, devices, logit_scale, topk or backend.
    """
    validate.check_similarity_inputs(tokens, text, logit_scale, topk)
    # the similarity is cheap next to the upsampling: "vectorized" runs the reference's
    if backend_for(backend, tokens.device) != "triton" or topk > MAX_TRITON_TOPK:
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
    """Label map: bilinear upsample of the maps to `size`, argmax over K, lookup in `class_table`.

    label = class_table[b, k*] where k* is the best map at the pixel (ties -> first map), or bg_label
    when its score is below bg_thresh. Interpolation is `F.interpolate(mode="bilinear",
    align_corners=False)` in fp32. Checks that every label fits out_dtype (this reads class_table's
    min and max, one device sync on CUDA).

    Args:
        maps: (B, K, h, w) float maps (segment assignment maps, or per-class probabilities).
        class_table: (B, K) integer label of each map.
        probs: (B, K) float score of each map (segment mode); None scores a pixel by the
            interpolated value of map k* (dense mode: maps are per-class probabilities).
        size: the output (H, W).
        bg_thresh: in [0, 1]; pixels scoring below it get bg_label.
        bg_label: the background label.
        out_dtype: torch.uint8, torch.int16 or torch.int32.
        backend: "auto" / "triton" / "vectorized" / "torch" (default: `$ZEROSEG_HEAD_BACKEND`, see
            `dispatch`).

    Returns:
        (B, H, W) labels in out_dtype.

    Raises:
        ZerosegError: bad shapes, dtypes, devices, size, bg_thresh or backend, or labels that do not
            fit out_dtype.
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

    Token k gets class c_k with probability p_k (`token_text_similarity`); pixels whose best
    upsampled map is k get label c_k + label_offset, or bg_label where p_k < bg_thresh
    (`upsample_labels` in segment mode).

    Args:
        tokens: (B, K, D) segment tokens.
        text: (C, D) class embeddings.
        logit_scale: the multiplier of the cosines (e.g. 100.0, not its log).
        maps: (B, K, h, w) the tokens' patch->segment assignment maps (one-hot at inference).
        size: the output (H, W).
        bg_thresh: in [0, 1]; segments whose best class probability is below it become bg_label.
        bg_label: the background label.
        label_offset: added to the class index (1: label 0 is background).
        out_dtype: torch.uint8, torch.int16 or torch.int32.
        backend: "auto" / "triton" / "vectorized" / "torch" (default: `$ZEROSEG_HEAD_BACKEND`, see
            `dispatch`).

    Returns:
        A `HeadResult`: labels (B, H, W) in out_dtype, and per token the class index (B, K) int64
        and its probability (B, K) float32.

    Raises:
        ZerosegError: bad shapes, dtypes, devices, size, bg_thresh or backend, tokens and maps that
            disagree on (B, K), or labels that do not fit out_dtype.
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
    """MaskCLIP-style head on dense patch tokens: classes are the maps.

    Every patch token gets class probabilities (B, C, h, w, materialised at patch resolution only);
    they are upsampled, the best class c per pixel wins and the pixel gets c + label_offset, or
    bg_label where the interpolated probability of c is below bg_thresh.

    Args:
        patch_tokens: (B, h, w, D) dense patch tokens.
        text: (C, D) class embeddings.
        logit_scale: the multiplier of the cosines (e.g. 100.0, not its log).
        size: the output (H, W).
        bg_thresh: in [0, 1]; pixels whose class probability is below it become bg_label.
        bg_label: the background label.
        label_offset: added to the class index (1: label 0 is background).
        out_dtype: torch.uint8, torch.int16 or torch.int32.
        backend: "auto" / "triton" / "vectorized" / "torch" (default: `$ZEROSEG_HEAD_BACKEND`, see
            `dispatch`).

    Returns:
        A `HeadResult`: labels (B, H, W) in out_dtype, and per patch the best class index (B, h, w)
        int64 and its probability (B, h, w) float32.

    Raises:
        ZerosegError: bad shapes, dtypes, devices, size, bg_thresh or backend, or labels that do not
            fit out_dtype.
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
    name = backend_for(backend, dev)
    if name != "triton":
        upsample = reference.upsample_labels_ref if name == "torch" else vectorized.upsample_labels_vec
        return reference.dense_head_with(
            upsample, patch_tokens, text, float(logit_scale), size, bg_thresh,
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
    """`"triton"`, `"vectorized"` or `"torch"` for a call on `device` (see `zeroseg.kernels.dispatch`)."""
    return resolve_backend(backend, device)


def _upsample(maps, class_table, probs, size, bg_thresh, bg_label, out_dtype, backend) -> torch.Tensor:
    """Run the upsample on the chosen backend; inputs and label range already checked."""
    name = backend_for(backend, maps.device)
    if name != "triton":
        upsample = reference.upsample_labels_ref if name == "torch" else vectorized.upsample_labels_vec
        return upsample(maps, class_table, probs, size, bg_thresh, bg_label=bg_label, out_dtype=out_dtype)
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
