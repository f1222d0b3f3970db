"""ZeroSeg's inference head as fused kernels, with the PyTorch reference that defines it.

The head turns tokens and class-name embeddings into a label map:

* `token_text_similarity` — cosine x logit scale -> softmax over classes -> best class (or top-k);
* `upsample_labels` — bilinear upsample of per-token maps, argmax, class lookup, background;
* `segment_head` — both, for ZeroSeg's K segment tokens and their assignment maps;
* `dense_head` — both, MaskCLIP-style, for dense patch tokens (the classes are the maps).

Each runs as Triton kernels on CUDA tensors and as the vectorised plain-torch path
(`zeroseg.kernels.vectorized`, the reference's labels bit for bit) elsewhere; `backend=` or
`$ZEROSEG_HEAD_BACKEND` overrides the choice, `torch` runs the reference itself
(`zeroseg.kernels.reference`, plain torch, also the test oracle; see `zeroseg.kernels.dispatch`).
Importing this package does not import triton.

The ops are for inference: the Triton path records no autograd graph (the torch paths may, as plain
torch). Labels are int32 by default; uint8 / int16 halve or quarter the bytes written.
"""

from zeroseg.kernels.api import dense_head, segment_head, token_text_similarity, upsample_labels
from zeroseg.kernels.dispatch import ENV_VAR, available_backends, resolve_backend
from zeroseg.kernels.results import HeadResult, SimilarityResult

__all__ = [
    "ENV_VAR",
    "HeadResult",
    "SimilarityResult",
    "available_backends",
    "dense_head",
    "resolve_backend",
    "segment_head",
    "token_text_similarity",
    "upsample_labels",
]
