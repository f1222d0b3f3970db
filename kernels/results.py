"""Result types of the head ops, shared by the reference and the Triton backend."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SimilarityResult(NamedTuple):
    """What `token_text_similarity` returns.

    max_prob: (B, N) float32 softmax probability of the best class, or (B, N, k) sorted descending
        when topk=k > 1.
    index: (B, N) int64 class index of `max_prob` (ties go to the lowest index), or (B, N, k).
    probs: (B, N, C) float32 full softmax, only when asked for with `return_probs=True`, else None.
    """

    max_prob: torch.Tensor
    index: torch.Tensor
    probs: torch.Tensor | None = None


class HeadResult(NamedTuple):
    """What `segment_head` and `dense_head` return.

    labels: (B, H, W) label map in the requested integer dtype.
    index: class index per token, int64 — (B, K) for segment tokens, (B, h, w) for patch tokens.
    prob: softmax probability of that class per token, float32, same shape as `index`.
    """

    labels: torch.Tensor
    index: torch.Tensor
    prob: torch.Tensor
