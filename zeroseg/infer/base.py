"""The staged pipeline every segmenter shares: classes -> text, images -> pixels -> forward -> head.

`SegmenterBase.__call__` composes four stages that subclasses provide (SAM's `predict` over
`predict_torch`, nanoowl's encode_text / encode_image / decode):

    encode_classes(classes) -> (LabelSpace, text embeddings)   costly once per vocabulary, cached
    preprocess(images, size) -> pixels (B, 3, H, W), floats in [0, 1] at the network input size
    forward(pixels)         -> the engine's output (ZeroSeg: segment tokens + assignment maps)
    head(out, text, sizes)  -> one SegmentationResult per image, at its own size

`forward` is the seam an engine replaces: an ONNX Runtime, TensorRT or AOTInductor session that
takes the same pixels and returns the same output drops in without touching the rest. Batching by
input size, the label space and the argument checks live here once.

No torch at import time: the ONNX runtime builds on this class without PyTorch installed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from PIL import Image

from zeroseg.classes import parse_class_names
from zeroseg.data.images import open_rgb
from zeroseg.errors import ZerosegError
from zeroseg.infer.labels import MAX_INFERENCE_SIDE, LabelSpace, SegmentationResult, check_bg_thresh
from zeroseg.preprocess import inference_size

ClassesLike = str | Sequence[str] | Sequence[Sequence[str]]
ImageLike = Image.Image | str | os.PathLike


class SegmenterBase:
    """Batching, label space and input geometry shared by every segmenter; the stages are abstract.

    Subclasses set `patch`, `short_side`, `default_bg_thresh` and `default_bg_prompt` and implement
    `embed_prompts`, `preprocess`, `forward` and `head`.
    """

    patch: int
    short_side: int
    default_bg_thresh: float
    default_bg_prompt: bool
    #: Cap on the longer side of the network input (an exported bundle may set a smaller one).
    max_side: int = MAX_INFERENCE_SIDE

    # ---- geometry and labels ------------------------------------------------------------------

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size (H, W) of an image: shorter side `short_side`, both sides multiples of
        the patch, the longer side capped at `max_side`."""
        h, w = inference_size(height, width, self.short_side, self.patch)
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            h = max(self.patch, int(h * scale) // self.patch * self.patch)
            w = max(self.patch, int(w * scale) // self.patch * self.patch)
        return h, w

    def label_space(
        self, classes: ClassesLike, *, bg_prompt: bool | None = None, background: bool = True
    ) -> LabelSpace:
        """Parse user classes (a class list, or entries of synonyms) into a label space."""
        bg_prompt = self.default_bg_prompt if bg_prompt is None else bg_prompt
        return LabelSpace.build(parse_class_names(classes), bg_prompt=bg_prompt, background=background)

    def encode_classes(
        self, classes: ClassesLike, *, bg_prompt: bool | None = None, background: bool = True
    ) -> tuple[LabelSpace, Any]:
        """The label space of `classes` and the text embeddings (C, D) of its prompts."""
        space = self.label_space(classes, bg_prompt=bg_prompt, background=background)
        return space, self.embed_prompts(space.prompts)

    # ---- the stages ---------------------------------------------------------------------------

    def embed_prompts(self, prompts: Sequence[Sequence[str]]) -> Any:
        """Unit-norm text embeddings (C, D) of the prompts (synonym lists), in order."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> Any:
        """RGB images -> pixels (B, 3, H, W) in [0, 1] at the network input `size` (H, W)."""
        raise NotImplementedError

    def forward(self, pixels: Any) -> Any:
        """The network on preprocessed pixels (the seam an exported engine replaces)."""
        raise NotImplementedError

    def head(
        self,
        out: Any,
        text: Any,
        sizes: Sequence[tuple[int, int]],
        *,
        bg_thresh: float,
        space: LabelSpace,
    ) -> list[SegmentationResult]:
        """Name the batch's output with the text embeddings: one result per image at its (H, W)."""
        raise NotImplementedError

    # ---- the composition ----------------------------------------------------------------------

    def __call__(
        self,
        images: Sequence[ImageLike],
        classes: ClassesLike,
        *,
        bg_thresh: float | None = None,
        bg_prompt: bool | None = None,
        background: bool = True,
        batch_size: int = 8,
    ) -> list[SegmentationResult]:
        """Segment images into the given classes.

        Args:
            images: PIL images or paths (decoded upright RGB, any mode).
            classes: "cat; dog" / ["cat", "sofa, couch"] / [["sofa", "couch"], ...]; a leading
                "background" entry declares label 0 (see `LabelSpace`).
            bg_thresh: segments whose best class probability is below it become background
                (default: the model's tuned value); ignored with background=False.
            bg_prompt: also prompt "background" as a class (default: the model's setting).
            background: False for label sets without background (every pixel gets a class).
            batch_size: images per forward pass (images are grouped by network input size).

        Returns:
            One `SegmentationResult` per image, in order, with labels at the image's own size.
        """
        thresh = (
            0.0
            if not background
            else check_bg_thresh(self.default_bg_thresh if bg_thresh is None else bg_thresh)
        )
        if batch_size <= 0:
            raise ZerosegError(f"batch size must be positive, got {batch_size}")
        space, text = self.encode_classes(classes, bg_prompt=bg_prompt, background=background)
        pil = [img if isinstance(img, Image.Image) else open_rgb(img) for img in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(pil):
            groups[self.input_size(img.height, img.width)].append(i)
        results: list[SegmentationResult | None] = [None] * len(pil)
        for size, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                out = self.forward(self.preprocess([pil[i] for i in chunk], size))
                sizes = [(pil[i].height, pil[i].width) for i in chunk]
                named = self.head(out, text, sizes, bg_thresh=thresh, space=space)
                for i, result in zip(chunk, named, strict=True):
                    results[i] = result
        return [r for r in results if r is not None]
