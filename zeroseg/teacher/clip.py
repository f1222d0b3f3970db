"""The frozen CLIP image teacher: multi-scale grid views and batched view encoding.

Training distils CLIP's image embeddings of 30 views per image (the full image and the cells of
2x2, 3x3 and 4x4 grids, each resized to the teacher's input size; paper section 2) into the student.
Features are L2-normalised: CLIP features are only ever compared by cosine (at inference the segment
tokens are named by cosine with text embeddings), so normalising makes the paper's L1 targets
independent of the arbitrary scale of each view's raw embedding. The paper does not say either way.

Teachers are loaded and saved by `zeroseg.teacher.load` (a spec string names one, see
`load_teacher`); `Teacher.fingerprint` identifies the weights for the feature cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.errors import ZerosegError
from zeroseg.preprocess import resize_tensor
from zeroseg.teacher.text_state import text_state_from_clip
from zeroseg.teacher.views import check_grids, grid_boxes, grid_views, num_views, view_boxes
from zeroseg.text import TextEncoder

__all__ = [
    "Teacher",
    "check_grids",
    "grid_boxes",
    "grid_views",
    "num_views",
    "view_boxes",
    "weights_fingerprint",
]


def weights_fingerprint(label: str, state_dict: dict[str, torch.Tensor], extra: dict) -> str:
    """`label@hash`: sha256 over `extra` (JSON) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"{label}@{h.hexdigest()[:16]}"


class Teacher:
    """A frozen open_clip CLIP (eval mode, no gradients) and what the cache and checkpoints need.

    Built by `load_teacher`; the constructor puts `model` in eval mode and freezes it.

    Args:
        model: the open_clip `CLIP` module.
        spec: the spec string it was loaded from (see `load_teacher`).
        name: a label for fingerprints and messages.
        model_cfg: the kwargs of `open_clip.model.CLIP(**model_cfg)` (saved with the text tower).
        mean: per-channel pixel mean the model was trained with.
        std: per-channel pixel std the model was trained with.
        tokenizer_name: the tokenizer of the text tower (an open_clip model name or `SIMPLE_TOKENIZER`).
        context_length: the text tower's token context length.
        fingerprint: `label@hash` of the weights (`weights_fingerprint`); the feature cache checks it.
        token_subset: the original CLIP BPE ids of a pruned text vocabulary, if any.

    Attributes:
        image_size: the (square) input side of the image tower.
        embed_dim: the dimension E of the image and text embeddings.
        logit_scale: CLIP's learned multiplier of cosine similarities (already exponentiated).

    Raises:
        ZerosegError: the image tower takes non-square input.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: str,
        name: str,
        model_cfg: dict,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer_name: str,
        context_length: int,
        fingerprint: str,
        token_subset: Sequence[int] | None = None,
    ):
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.spec = spec
        self.name = name
        self.model_cfg = model_cfg
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.tokenizer_name = tokenizer_name
        self.context_length = int(context_length)
        self.token_subset = list(token_subset) if token_subset else None
        self.fingerprint = fingerprint
        size = getattr(model.visual, "image_size", None) or model_cfg["vision_cfg"].get("image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size[0] != size[1]:
            raise ZerosegError(
                f"teacher {spec} takes non-square {size[0]}x{size[1]} input; use a square model"
            )
        self.image_size = int(size[0])
        self.embed_dim = int(model_cfg["embed_dim"])
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Teacher:
        """Move the model to `device` (in place); returns self."""
        self.model.to(device)
        return self

    def text_state(self) -> dict:
        """The text tower as {"config", "state_dict"} for checkpoints (see `zeroseg.text`).

        Returns:
            The dict `save_checkpoint(text=...)` and `TextEncoder.from_state` take (tensors on the CPU).
        """
        return text_state_from_clip(
            self.model,
            model_cfg=self.model_cfg,
            tokenizer_name=self.tokenizer_name,
            context_length=self.context_length,
            token_subset=self.token_subset,
        )

    def text_encoder(self) -> TextEncoder:
        """A standalone text encoder equal to this teacher's `encode_text`.

        Returns:
            A `TextEncoder` on the CPU, rebuilt from `text_state`.
        """
        return TextEncoder.from_state(self.text_state())

    @torch.no_grad()
    def encode_images(
        self, images01: torch.Tensor, *, max_batch: int | None = None, amp: bool = False
    ) -> torch.Tensor:
        """L2-normalised CLIP image features of whole images.

        Args:
            images01: (N, 3, H, W) images in [0, 1]; resized to `image_size` if H, W differ.
            max_batch: at most this many images per forward (default: all at once).
            amp: run the forward under CUDA float16 autocast (ignored on the CPU).

        Returns:
            (N, E) float32 unit-norm features, on the teacher's device.
        """
        x = images01.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = resize_tensor(x, (self.image_size, self.image_size))
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        step = max(1, int(max_batch)) if max_batch else max(1, x.shape[0])
        use_amp = amp and x.device.type == "cuda"
        outs = []
        for start in range(0, x.shape[0], step):
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                feats = self.model.encode_image(x[start : start + step])
            outs.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(outs) if outs else torch.empty(0, self.embed_dim, device=x.device)

    @torch.no_grad()
    def encode_views(
        self,
        images01: torch.Tensor,
        grids: Sequence[int] = (1, 2, 3, 4),
        *,
        max_batch: int | None = None,
        amp: bool = False,
    ) -> torch.Tensor:
        """Unit-norm teacher features of every grid view of each image (the training targets).

        All B*V views go through the teacher in one batched forward, or in chunks (images are cut
        into views chunk by chunk, so memory stays bounded).

        Args:
            images01: (B, 3, S, S) images in [0, 1].
            grids: the grid sizes; 1 is the full image (see `check_grids`).
            max_batch: at most this many views per forward (default: all B*V at once).
            amp: run the forward under CUDA float16 autocast (ignored on the CPU).

        Returns:
            (B, V, E) float32 features, views in `view_boxes` order, on the teacher's device.

        Raises:
            ZerosegError: `grids` is invalid.
        """
        grids = check_grids(grids)
        views = num_views(grids)
        b = images01.shape[0]
        per_chunk = max(1, int(max_batch) // views) if max_batch else max(1, b)
        outs = []
        for start in range(0, b, per_chunk):
            chunk = images01[start : start + per_chunk].to(self.device, torch.float32)
            v = grid_views(chunk, grids, self.image_size)
            feats = self.encode_images(v.flatten(0, 1), max_batch=max_batch, amp=amp)
            outs.append(feats.view(chunk.shape[0], views, -1))
        if not outs:
            return torch.empty(0, views, self.embed_dim, device=self.device)
        return torch.cat(outs)
