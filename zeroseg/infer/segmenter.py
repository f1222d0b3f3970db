"""Zero-shot segmentation with a trained ZeroSeg checkpoint: `zeroseg.Segmenter`.

The pipeline is DESIGN.md's, step for step: class names -> prompt templates -> the checkpoint's CLIP
text tower -> normalised embeddings (cached per vocabulary); image -> shorter side 448 (a multiple
of the patch) -> student -> segment tokens and the composed soft patch->segment assignment; then
the head (`zeroseg.kernels.segment_head`, the one dispatch point): cosine x logit scale, softmax
over classes, background below the threshold, bilinear upsampling of the assignment straight to
the input image's size (align_corners=False), argmax segment per pixel.

Label space: 0 is always background, 1..C the foreground classes in the order given. A leading
"background" entry in the class list only declares that label; whether background is also a
*prompted* class (so a segment can be named background by the text side, not only by the
threshold) is `bg_prompt`, which a checkpoint may default (ShapeWorld's does).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from zeroseg.checkpoint import Checkpoint, load_checkpoint
from zeroseg.classes import parse_class_names
from zeroseg.data.images import open_rgb, to_unit_tensor
from zeroseg.errors import ZerosegError
from zeroseg.kernels import segment_head
from zeroseg.preprocess import inference_size, normalize, resize_tensor
from zeroseg.text import Vocabulary

#: The longer side of the network input is capped (extreme aspect ratios are downscaled further).
MAX_INFERENCE_SIDE = 2048
DEFAULT_BG_THRESH = 0.5


@dataclass(frozen=True)
class LabelSpace:
    """Output labels (0 = background) and the prompts that name them.

    prompts: the classes handed to the text encoder, in order; label_offset: label of prompts[i] is
    i + label_offset (0 when background is prompted first, else 1).
    """

    names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    label_offset: int

    @classmethod
    def build(cls, classes: Sequence[Sequence[str]], bg_prompt: bool, background: bool = True) -> LabelSpace:
        """From parsed class entries (synonym lists); a leading "background" entry is optional.

        With background=False (data sets without a background class) the labels are the classes
        themselves, 0..C-1, and every pixel is named.
        """
        entries = [tuple(c) for c in classes]
        if not background:
            return cls(tuple(e[0] for e in entries), tuple(entries), 0)
        background: tuple[str, ...] = ("background",)
        if entries and entries[0][0].strip().lower() == "background":
            background = entries.pop(0)
        if any(e[0].strip().lower() == "background" for e in entries):
            raise ZerosegError(
                "'background' is label 0: list it first or leave it out (bg_prompt decides whether the "
                "text side may name it)"
            )
        if not entries:
            raise ZerosegError("no foreground class given: pass at least one class name besides background")
        names = ("background", *(e[0] for e in entries))
        if bg_prompt:
            return cls(names, (background, *entries), 0)
        return cls(names, tuple(entries), 1)


@dataclass
class SegmentationResult:
    """Labels of one image at its own size, with the names and the per-segment decisions."""

    labels: np.ndarray  # (H, W) int32, 0 = background
    class_names: tuple[str, ...]  # label value -> name
    segment_labels: np.ndarray  # (m,) label each segment token received before thresholding
    segment_probs: np.ndarray  # (m,) its softmax probability

    def fractions(self) -> dict[str, float]:
        """Share of the image's pixels per class present."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        total = max(1, self.labels.size)
        return {self.class_names[i]: float(c) / total for i, c in enumerate(counts) if c > 0}


class Segmenter:
    """Batched zero-shot segmentation with a checkpoint; text embeddings are cached per vocabulary."""

    def __init__(
        self,
        checkpoint: Checkpoint | str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        short_side: int | None = None,
        backend: str | None = None,
    ) -> None:
        ckpt = (
            checkpoint
            if isinstance(checkpoint, Checkpoint)
            else load_checkpoint(checkpoint, with_train_state=False)
        )
        self.checkpoint = ckpt
        self.device = torch.device(device)
        self.model = ckpt.build_student(self.device)
        self.vocabulary = Vocabulary(ckpt.build_text_encoder(self.device), ckpt.templates)
        self.preprocess = ckpt.preprocess
        self.patch = ckpt.student_config.patch_size
        self.short_side = self.preprocess.test_short_side if short_side is None else int(short_side)
        if self.short_side < self.patch:
            raise ZerosegError(f"short side {self.short_side} is smaller than the patch size {self.patch}")
        self.logit_scale = ckpt.logit_scale
        self.backend = backend
        inference = ckpt.config.get("inference", {})
        self.default_bg_thresh = float(inference.get("bg_thresh", DEFAULT_BG_THRESH))
        self.default_bg_prompt = bool(inference.get("bg_prompt", False))

    def label_space(
        self,
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        bg_prompt: bool | None = None,
        background: bool = True,
    ) -> LabelSpace:
        """Parse user classes (a class list, or entries of synonyms) into a label space."""
        parsed = parse_class_names(classes)
        return LabelSpace.build(
            parsed, self.default_bg_prompt if bg_prompt is None else bg_prompt, background
        )

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for an image: shorter side `short_side`, longer side capped."""
        h, w = inference_size(height, width, self.short_side, self.patch)
        if max(h, w) > MAX_INFERENCE_SIDE:
            scale = MAX_INFERENCE_SIDE / max(h, w)
            h = max(self.patch, int(h * scale) // self.patch * self.patch)
            w = max(self.patch, int(w * scale) // self.patch * self.patch)
        return h, w

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[Image.Image | str | os.PathLike],
        classes: str | Sequence[str] | Sequence[Sequence[str]],
        *,
        bg_thresh: float | None = None,
        bg_prompt: bool | None = None,
        background: bool = True,
        batch_size: int = 8,
    ) -> list[SegmentationResult]:
        """Segment images (PIL or paths) into the given classes; one result per image, in order."""
        thresh = self.default_bg_thresh if bg_thresh is None else float(bg_thresh)
        if not background:
            thresh = 0.0
        if not 0.0 <= thresh <= 1.0:
            raise ZerosegError(f"background threshold must be in [0, 1], got {thresh}")
        if batch_size <= 0:
            raise ZerosegError(f"batch size must be positive, got {batch_size}")
        space = self.label_space(classes, bg_prompt, background)
        text = self.vocabulary([list(p) for p in space.prompts]).to(self.device)
        pil = [img if isinstance(img, Image.Image) else open_rgb(img) for img in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(pil):
            groups[self.input_size(img.height, img.width)].append(i)
        results: list[SegmentationResult | None] = [None] * len(pil)
        for size, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = torch.stack([resize_tensor(to_unit_tensor(pil[i]), size) for i in chunk]).to(
                    self.device
                )
                out = self.model.segment(normalize(batch, self.preprocess))
                for j, i in enumerate(chunk):
                    results[i] = self._head(
                        out.segments[j : j + 1], out.maps[j : j + 1], text, pil[i].size, thresh, space
                    )
        return [r for r in results if r is not None]

    def _head(self, segments, maps, text, size_wh, thresh, space: LabelSpace) -> SegmentationResult:
        head = segment_head(
            segments, text, self.logit_scale, maps, (size_wh[1], size_wh[0]), thresh,
            bg_label=0, label_offset=space.label_offset, backend=self.backend,
        )  # fmt: skip
        return SegmentationResult(
            labels=head.labels[0].cpu().numpy().astype(np.int32),
            class_names=space.names,
            segment_labels=(head.index[0] + space.label_offset).cpu().numpy(),
            segment_probs=head.prob[0].cpu().numpy(),
        )
