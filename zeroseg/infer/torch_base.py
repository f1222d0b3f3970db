"""The two stages every PyTorch segmenter shares: text through a `Vocabulary`, images to tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from zeroseg.data.images import to_unit_tensor
from zeroseg.infer.base import SegmenterBase
from zeroseg.preprocess import resize_tensor
from zeroseg.text import Vocabulary


class TorchSegmenterBase(SegmenterBase):
    """`embed_prompts` and `preprocess` for segmenters that hold a `vocabulary` and a `device`."""

    vocabulary: Vocabulary
    device: torch.device

    @torch.no_grad()
    def embed_prompts(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """(C, D) unit-norm class embeddings on the segmenter's device (cached per vocabulary)."""
        return self.vocabulary([list(p) for p in prompts]).to(self.device)

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
        """(B, 3, H, W) float pixels in [0, 1] at `size`, bicubic antialiased, on the device."""
        return torch.stack([resize_tensor(to_unit_tensor(img), size) for img in images]).to(self.device)
