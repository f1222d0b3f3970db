"""Zero-shot segmentation with a trained ZeroSeg checkpoint: `zeroseg.Segmenter`.

The paper's inference, stage for stage (`zeroseg.infer.base` composes them):
    encode_classes: class names -> prompt templates -> the checkpoint's CLIP text tower ->
        normalised embeddings, cached per vocabulary;
    preprocess: image -> shorter side `short_side` (both sides multiples of the patch), [0, 1];
    forward: normalisation -> student -> unit-norm segment tokens and the hard patch -> segment
        assignment (every grouping stage's argmax assignment, composed: GroupViT's inference);
    head: `zeroseg.kernels.segment_head`, the one dispatch point: cosine x logit scale, softmax over
        classes, background below the threshold, bilinear upsampling of the assignment straight to
        the image's own size (align_corners=False), argmax segment per pixel.

`head="dense"` (ours, not the paper's; `head="paper"` is the paper's, "segments" its older name):
every patch takes the token of the segment that owns it and `zeroseg.kernels.dense_head` (MaskCLIP's
head) names the patches and upsamples their class probabilities instead of the assignment, so a
pixel where two segments meet is painted only if the interpolated probability of its class clears
the threshold. On ShapeWorld this trims the border a segment's patches overhang (README, findings).
The exporters put either head inside their engines (`zeroseg-export ... --head paper|dense`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zeroseg.checkpoint import Checkpoint, load_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.infer.factory import HEADS, head_name
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace, SegmentationResult, head_result
from zeroseg.infer.torch_base import TorchSegmenterBase
from zeroseg.kernels import dense_head, segment_head
from zeroseg.kernels.reference import patch_tokens_ref
from zeroseg.model.student import SegmentationOutput
from zeroseg.preprocess import normalize
from zeroseg.text import Vocabulary
from zeroseg.utils.device import resolve_device

__all__ = ["HEADS", "Segmenter", "head_name", "name_patches", "name_segments"]


class Segmenter(TorchSegmenterBase):
    """Batched zero-shot segmentation with a ZeroSeg checkpoint; text embeddings cached per vocabulary."""

    def __init__(
        self,
        checkpoint: Checkpoint | str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        short_side: int | None = None,
        backend: str | None = None,
        head: str | None = None,
    ) -> None:
        """Build the student and the text tower of a checkpoint.

        Args:
            checkpoint: a loaded `Checkpoint` or the path of one (`zeroseg train`'s model.pt).
            device: where the networks and the head run.
            short_side: network input short side (default: the checkpoint's tuned value).
            backend: the head's kernels, "vectorized", "torch" or "triton" (default: the kernels' choice).
            head: "paper" (the paper's head; "segments" is accepted) or "dense" (ours; see the module
                docstring); default: the checkpoint's recorded head, else the paper's.
        """
        ckpt = (
            checkpoint
            if isinstance(checkpoint, Checkpoint)
            else load_checkpoint(checkpoint, with_train_state=False)
        )
        self.head_mode = ckpt.config.default_head if head is None else head_name(head)
        self.checkpoint = ckpt
        self.device = resolve_device(device)
        self.model = ckpt.build_student(self.device)
        self.vocabulary = Vocabulary(ckpt.build_text_encoder(self.device), ckpt.templates)
        self.preprocessing = ckpt.preprocess
        self.patch = ckpt.student_config.patch_size
        self.short_side = self.preprocessing.test_short_side if short_side is None else int(short_side)
        if self.short_side < self.patch:
            raise ZerosegError(f"short side {self.short_side} is smaller than the patch size {self.patch}")
        self.logit_scale = ckpt.logit_scale
        self.backend = backend
        config = ckpt.config
        self.default_bg_thresh = DEFAULT_BG_THRESH if config.bg_thresh is None else config.bg_thresh
        self.default_bg_prompt = config.bg_prompt

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        short_side: int | None = None,
        backend: str | None = None,
        head: str | None = None,
    ) -> Segmenter:
        """Load the checkpoint at `path` (inference parts only) and build its segmenter."""
        ckpt = load_checkpoint(path, with_train_state=False)
        return cls(ckpt, device=device, short_side=short_side, backend=backend, head=head)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> SegmentationOutput:
        """Unit-norm segment tokens (B, m, D) and one-hot assignment maps (B, m, h, w) of [0, 1] pixels."""
        out = self.model.segment(normalize(pixels, self.preprocessing))
        return SegmentationOutput(F.normalize(out.segments, dim=-1), out.maps)

    @torch.no_grad()
    def head(
        self,
        out: SegmentationOutput,
        text: torch.Tensor,
        sizes: Sequence[tuple[int, int]],
        *,
        bg_thresh: float,
        space: LabelSpace,
    ) -> list[SegmentationResult]:
        """Name each image's segments and paint its labels at its own (H, W)."""
        name = name_patches if self.head_mode == "dense" else name_segments
        return name(
            out,
            text,
            sizes,
            logit_scale=self.logit_scale,
            bg_thresh=bg_thresh,
            space=space,
            backend=self.backend,
        )


def name_segments(
    out: SegmentationOutput,
    text: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    *,
    logit_scale: float,
    bg_thresh: float,
    space: LabelSpace,
    backend: str | None = None,
) -> list[SegmentationResult]:
    """The ZeroSeg head on a batch (`zeroseg.kernels.segment_head`, one image at a time).

    Args:
        out: segment tokens (B, m, D) and assignment maps (B, m, h, w), from any engine.
        text: (C, D) class embeddings of `space`'s prompts.
        sizes: each image's (H, W): its labels are painted at that size.
        logit_scale: multiplier of the cosine similarities.
        bg_thresh: segments whose best class probability is below it become background.
        space: the label space (names, label offset).
        backend: the kernels' backend (None: `zeroseg.kernels`' choice for the device).

    Returns:
        One `SegmentationResult` per image.
    """
    results = []
    for j, size in enumerate(sizes):
        head = segment_head(
            out.segments[j : j + 1], text, logit_scale, out.maps[j : j + 1], size, bg_thresh,
            bg_label=0, label_offset=space.label_offset, backend=backend,
        )  # fmt: skip
        results.append(head_result(head.labels, head.index, head.prob, space))
    return results


def name_patches(
    out: SegmentationOutput,
    text: torch.Tensor,
    sizes: Sequence[tuple[int, int]],
    *,
    logit_scale: float,
    bg_thresh: float,
    space: LabelSpace,
    backend: str | None = None,
) -> list[SegmentationResult]:
    """The dense head on a batch: each patch carries its segment's token, `zeroseg.kernels.dense_head`
    names the patches and paints the pixels (arguments as `name_segments`).

    Returns:
        One `SegmentationResult` per image; its `segment_labels` / `segment_probs` are per patch
        (row-major), as MaskCLIP's are.
    """
    tokens = patch_tokens_ref(out.segments, out.maps)
    results = []
    for j, size in enumerate(sizes):
        head = dense_head(
            tokens[j : j + 1], text, logit_scale, size, bg_thresh,
            bg_label=0, label_offset=space.label_offset, backend=backend,
        )  # fmt: skip
        results.append(head_result(head.labels, head.index, head.prob, space))
    return results
