"""Preprocessing constants: the single source of truth for how pixels become model input.

The student is trained and run on images normalised with CLIP's statistics, so that the same
tensors can feed the teacher during training. Checkpoints store a `Preprocess` so that exported
engines and the benchmark reproduce exactly what the model saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: Background thresholds the paper uses (probability space, GroupViT protocol).
PAPER_BG_THRESH: dict[str, float] = {"voc": 0.95, "context": 0.05, "coco_object": 0.35}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a normalised tensor.

    train_size: side of the centre crop used in training (the paper: 224).
    test_short_side: inference resizes the shorter side to this (the paper: 448); the longer side
        keeps the aspect ratio and both are rounded to a multiple of the patch size.
    """

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    train_size: int = 224
    test_short_side: int = 448
    interpolation: str = field(default="bicubic")

    def to_dict(self) -> dict:
        """JSON-able form for checkpoints and engine manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        """Inverse of `to_dict`; lists become tuples."""
        return cls(
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            train_size=int(data["train_size"]),
            test_short_side=int(data["test_short_side"]),
            interpolation=str(data.get("interpolation", "bicubic")),
        )


def inference_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """Size (H, W) with the shorter side at `short_side`, aspect kept, both rounded to `multiple`."""
    scale = short_side / min(height, width)
    h = max(multiple, round(height * scale / multiple) * multiple)
    w = max(multiple, round(width * scale / multiple) * multiple)
    return h, w


def normalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Normalise a [0,1] tensor (...,3,H,W) with the preprocessing mean and std."""
    import torch  # torch is imported where tensors are used: the constants serve torch-free runtimes too

    mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def resize_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic antialiased resize of a (...,3,H,W) [0,1] tensor, clamped back to [0,1]."""
    import torch.nn.functional as F

    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    return x.squeeze(0) if squeeze else x
