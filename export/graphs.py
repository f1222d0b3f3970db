"""One traceable wrapper per exported graph, kept out of the library model (SAM's `SamOnnxModel`).

    ImageEncoderGraph  pixels in [0, 1] -> unit segment embeddings + patch -> segment assignment;
                       the checkpoint's normalisation is folded in as constants, so a runtime only
                       resizes.
    TextEncoderGraph   token ids -> unit text embeddings; CLIP's end-of-text pooling reads the
                       features at the largest token id, taken here by an ArgMax over the ids cast
                       to float32 (exact below 2**24; every CLIP vocabulary is) and a GatherElements,
                       because ONNX Runtime's CPU ArgMax has no int64 kernel.
    SizedSegmenterGraph  a SegmenterGraph whose output size is the length of two carrier inputs
                       (`rows` (H,), `cols` (W,)) instead of a tensor read with `.item()`: runtimes
                       that plan memory from bounded shapes (ExecuTorch) cannot size a buffer from
                       a value.
    SegmenterGraph     the image encoder, then the head it was built with: "paper"
                       (`zeroseg.kernels.reference.segment_head_traceable`) or "dense" (each patch
                       takes its segment's token, `patch_tokens_ref`, then `dense_head_traceable`),
                       both the reference head with symbolic output size: the label map with
                       exactly the reference's semantics (`zeroseg.Segmenter(head=...)`'s labels).

The wrappers are what `torch.onnx.export` traces; `zeroseg.export.core.specs` names their tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.errors import ZerosegError
from zeroseg.infer.factory import head_name
from zeroseg.kernels.reference import dense_head_traceable, patch_tokens_ref, segment_head_traceable
from zeroseg.preprocess import Preprocess


class ImageEncoderGraph(nn.Module):
    """The student on [0, 1] pixels: (B, 3, H, W) -> segments (B, K, D) unit norm, maps (B, K, h, w)."""

    def __init__(self, student: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.student = student.eval()
        self.register_buffer("mean", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.student.segment((pixels - self.mean) / self.std)
        return F.normalize(out.segments, dim=-1), out.maps


class TextEncoderGraph(nn.Module):
    """A `zeroseg.text.TextEncoder` on token ids (C, L) -> unit embeddings (C, D), export-safe pooling."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.tower = encoder.tower
        pool = getattr(self.tower, "pool_type", "argmax")
        # open_clip's own forward for anything but CLIP's argmax pooling (its int ops export as is)
        self.own_pooling = pool == "argmax" and getattr(self.tower, "cls_emb", None) is None
        if not self.own_pooling and pool not in ("eos", "first", "last"):
            raise ZerosegError(f"cannot export a text tower with pool_type {pool!r}")

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        tower = self.tower
        if not self.own_pooling:
            return F.normalize(tower(token_ids).float(), dim=-1)
        x, attn_mask = tower._embeds(token_ids)  # token + position embeddings and the causal mask
        x = tower.ln_final(tower.transformer(x, attn_mask=attn_mask))
        eot = token_ids.to(torch.float32).argmax(dim=-1)  # end-of-text: the largest id
        pooled = x.gather(1, eot.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
        proj = tower.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return F.normalize(pooled.float(), dim=-1)


class SegmenterGraph(nn.Module):
    """Pixels + text embeddings + threshold + label offset + output size -> the label map.

    Outputs: labels (B, H_out, W_out); per segment (paper head, (B, K)) or per patch (dense head,
    (B, h * w) row-major, as `zeroseg.infer.segmenter.name_patches` flattens them) the best class +
    label_offset before thresholding and its probability (`zeroseg.export.core.specs.segmenter_spec`).
    """

    def __init__(self, encoder: ImageEncoderGraph, logit_scale: float, head: str = "paper") -> None:
        super().__init__()
        self.encoder = encoder
        self.logit_scale = float(logit_scale)
        self.head = head_name(head)

    def forward(
        self,
        pixels: torch.Tensor,
        text_embeddings: torch.Tensor,
        bg_thresh: torch.Tensor,
        label_offset: torch.Tensor,
        output_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = output_size[0].item(), output_size[1].item()
        torch._check(height >= 1)
        torch._check(width >= 1)
        return self.label(pixels, text_embeddings, bg_thresh, label_offset, height, width)

    def label(self, pixels, text_embeddings, bg_thresh, label_offset, height, width):
        """`forward` with the output size given as two (symbolic) ints."""
        segments, maps = self.encoder(pixels)
        if self.head == "dense":
            head = dense_head_traceable(
                patch_tokens_ref(segments, maps), text_embeddings, self.logit_scale, (height, width),
                bg_thresh, bg_label=0, label_offset=label_offset,
            )  # fmt: skip
            index, prob = head.index.flatten(1), head.prob.flatten(1)
        else:
            head = segment_head_traceable(
                segments, text_embeddings, self.logit_scale, maps, (height, width), bg_thresh,
                bg_label=0, label_offset=label_offset,
            )  # fmt: skip
            index, prob = head.index, head.prob
        return head.labels, (index + label_offset).to(torch.int32), prob


class SizedSegmenterGraph(nn.Module):
    """A `SegmenterGraph` labelling at (len(rows), len(cols)): the output size as input shapes.

    `rows` and `cols` are uint8 vectors whose contents are never read; their lengths bound-check
    as dynamic dimensions, so ExecuTorch's memory planner sizes every buffer for the largest output.
    """

    def __init__(self, segmenter: SegmenterGraph) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(
        self,
        pixels: torch.Tensor,
        text_embeddings: torch.Tensor,
        bg_thresh: torch.Tensor,
        label_offset: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.segmenter.label(
            pixels, text_embeddings, bg_thresh, label_offset, rows.shape[0], cols.shape[0]
        )
