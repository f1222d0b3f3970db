"""What a segmentation names and returns: the label space of a call and the per-image result.

Label space: 0 is always background, 1..C the foreground classes in the order given. A leading
"background" entry in the class list only declares that label; whether background is also a
*prompted* class (so a segment can be named background by the text side, not only by the
threshold) is `bg_prompt`, which a checkpoint may default (ShapeWorld's does).

Plain numpy, no torch: the ONNX runtime uses these types too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeroseg.errors import ZerosegError

#: The longer side of the network input is capped (extreme aspect ratios are downscaled further).
MAX_INFERENCE_SIDE = 2048
DEFAULT_BG_THRESH = 0.5


def check_bg_thresh(value: float) -> float:
    """The background threshold as a float, refused outside [0, 1]."""
    thresh = float(value)
    if not 0.0 <= thresh <= 1.0:
        raise ZerosegError(f"background threshold must be in [0, 1], got {value}")
    return thresh


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
    def build(
        cls, classes: Sequence[Sequence[str]], *, bg_prompt: bool, background: bool = True
    ) -> LabelSpace:
        """From parsed class entries (synonym lists); a leading "background" entry is optional.

        Args:
            classes: class entries, each a list of synonyms (`zeroseg.classes.parse_class_names`).
            bg_prompt: prompt "background" (or the declared background entry) as a class of its own.
            background: False for data sets without a background class: the labels are the classes
                themselves, 0..C-1, and every pixel is named.

        Returns:
            The label space; a "background" anywhere but first is refused.
        """
        entries = [tuple(c) for c in classes]
        if not background:
            return cls(tuple(e[0] for e in entries), tuple(entries), 0)
        declared: tuple[str, ...] = ("background",)
        if entries and entries[0][0].strip().lower() == "background":
            declared = entries.pop(0)
        if any(e[0].strip().lower() == "background" for e in entries):
            raise ZerosegError(
                "'background' is label 0: list it first or leave it out (bg_prompt decides whether the "
                "text side may name it)"
            )
        if not entries:
            raise ZerosegError("no foreground class given: pass at least one class name besides background")
        names = ("background", *(e[0] for e in entries))
        if bg_prompt:
            return cls(names, (declared, *entries), 0)
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


def head_result(labels, index, prob, space: LabelSpace) -> SegmentationResult:
    """One image's `SegmentationResult` from a head's batch-of-one tensors: labels (1, H, W), and per
    segment or patch (any shape, flattened row-major) the best class index and its probability."""
    return SegmentationResult(
        labels=labels[0].cpu().numpy().astype(np.int32),
        class_names=space.names,
        segment_labels=(index[0].flatten() + space.label_offset).cpu().numpy(),
        segment_probs=prob[0].flatten().float().cpu().numpy(),
    )
