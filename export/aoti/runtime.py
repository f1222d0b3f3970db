"""`AOTISegmenter`: a bundle from `zeroseg-export aoti` run in-process, `zeroseg.Segmenter`'s call.

It subclasses `TorchSegmenterBase`, so batching by input size, the label space, the argument checks,
the text embeddings (`Vocabulary` over the bundle's `text_encoder.pt`, any class names) and the
resize (`zeroseg.preprocess.resize_tensor`) are the library's own; only two stages differ:

    forward  passes the pixels on: the end-to-end package needs the text and the output size, so
             it runs in `head` (as `OnnxSegmenter` does with segmenter.onnx);
    head     segmenter.pt2 on the batch, once per distinct image size, straight to each image's
             own size. A static package (exported without --dynamic) runs one image at a time and
             refuses any input size but its own with one line. The package holds the head it was
             exported with (`head_mode`, the manifest's `head`; the dense head's segment labels and
             probabilities are per patch, as `name_patches`').

Loading checks the manifest (format, version, its own checksum) and the sha256 of every file used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from zeroseg.errors import ZerosegError
from zeroseg.export.aoti.export import AOTI_FORMAT, TEXT_NAME
from zeroseg.export.core.formats import RUNTIMES
from zeroseg.export.core.manifest import read_manifest, verified_file
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace, SegmentationResult
from zeroseg.infer.torch_base import TorchSegmenterBase


def load_package(path: str | os.PathLike):
    """`torch._inductor.aoti_load_package` with a one-line error for a package that will not load."""
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # RuntimeError from the loader, zipfile errors, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(
            f"cannot load the AOTInductor package {path}: {first[:200]}; re-export it"
        ) from None


class AOTISegmenter(TorchSegmenterBase):
    """Zero-shot segmentation with an AOTInductor bundle; the same call and results as `zeroseg.Segmenter`.

    Subclasses for other end-to-end programs (`ExecuTorchSegmenter`) set FORMAT and RUNTIME and
    override `_open_program` (and `forward`, for their own input-size check; STATIC_HINT is this
    class's refusal hint).
    """

    FORMAT = AOTI_FORMAT
    RUNTIME = "aoti"
    STATIC_HINT = "re-export with --dynamic (or pass images of {w}:{h} aspect)"

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        *,
        device=None,
        precision: str | None = None,
        threads: int | None = None,
        short_side: int | None = None,
    ) -> None:
        """Open a bundle after checking its manifest and the files' checksums.

        Args:
            bundle_dir: the folder `zeroseg-export aoti --out` wrote.
            device: "cpu" (the package is compiled for the CPU; the default).
            precision: "fp32" (the default; the package's only one).
            threads: torch intra-op threads to set (default: leave torch's setting). A package
                built without --portable was specialised to its build's thread count.
            short_side: network input short side (default: the bundle's; a static package only
                accepts the input size it was compiled for).
        """
        from zeroseg.text import TextEncoder, Vocabulary

        RUNTIMES[self.RUNTIME].check(
            device=device, precision=precision, threads=threads, short_side=short_side
        )
        self.bundle = Path(bundle_dir)
        self.manifest = manifest = read_manifest(self.bundle, fmt=self.FORMAT)
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = torch.device("cpu")
        self.patch = manifest.patch
        self.short_side = manifest.short_side if short_side is None else int(short_side)
        if self.short_side < self.patch:
            raise ZerosegError(f"short side {self.short_side} is smaller than the patch size {self.patch}")
        self.max_side = int(manifest.preprocess["max_side"])
        static = manifest.exporter.get("static_input")
        self.static_size: tuple[int, int] | None = None if static is None else tuple(static["hw"])
        inference = manifest.model.get("inference", {})
        self.default_bg_thresh = float(inference.get("bg_thresh", DEFAULT_BG_THRESH))
        self.default_bg_prompt = bool(inference.get("bg_prompt", False))
        self.head_mode = manifest.head  # the head inside segmenter.pt2 ("paper" or "dense")
        self.runner = self._open_program(manifest)
        text_path = verified_file(self.bundle, manifest, manifest.text.get("encoder_file", TEXT_NAME))
        state = torch.load(text_path, map_location="cpu", weights_only=True)
        self.vocabulary = Vocabulary(TextEncoder.from_state(state).eval(), manifest.text["templates"])

    def _open_program(self, manifest):
        """The callable end-to-end program: segmenter.pt2 through the AOTInductor loader."""
        return load_package(verified_file(self.bundle, manifest, manifest.graph_file("segmenter")))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pixels themselves, after the size check: segmenter.pt2 runs in `head`."""
        if self.static_size is not None and tuple(pixels.shape[-2:]) != self.static_size:
            h, w = self.static_size
            raise ZerosegError(
                f"{self.manifest.graph_file('segmenter')} is static at {h}x{w} (batch 1) but this image "
                f"needs a {pixels.shape[-2]}x{pixels.shape[-1]} input; {self.STATIC_HINT.format(h=h, w=w)}"
            )
        return pixels

    @torch.no_grad()
    def head(
        self,
        out: torch.Tensor,
        text: torch.Tensor,
        sizes: Sequence[tuple[int, int]],
        *,
        bg_thresh: float,
        space: LabelSpace,
    ) -> list[SegmentationResult]:
        """Run segmenter.pt2 on the batch, once per distinct image size; one result per image."""
        step = 1 if self.static_size is not None else len(sizes)
        results: list[SegmentationResult | None] = [None] * len(sizes)
        thresh = torch.tensor(float(bg_thresh), dtype=torch.float32)
        offset = torch.tensor(int(space.label_offset), dtype=torch.int64)
        text = text.float().contiguous()
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                pixels = out[chunk].float().contiguous()
                labels, seg_labels, seg_probs = self.runner(pixels, text, thresh, offset, torch.tensor(size))
                for j, i in enumerate(chunk):
                    results[i] = SegmentationResult(
                        labels=labels[j].numpy().astype(np.int32, copy=False),
                        class_names=space.names,
                        segment_labels=seg_labels[j].numpy().astype(np.int64),
                        segment_probs=seg_probs[j].numpy(),
                    )
        return [r for r in results if r is not None]
