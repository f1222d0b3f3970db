"""`ExecuTorchSegmenter`: a bundle from `zeroseg-export executorch` run in-process, as `zeroseg.Segmenter`.

The stages are `AOTISegmenter`'s (batching, label space, text embeddings over the bundle's
`text_encoder.pt`, the resize; a static input size refused in one line when it differs); only the
program differs: segmenter.pte (or segmenter.int8.pte) through ExecuTorch's Python runtime, with
its threadpool sized to `threads`, the output size passed as the lengths of two carrier inputs
(`zeroseg.export.graphs.SizedSegmenterGraph`) and refused in one line above the bound the program
was planned for.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from zeroseg.errors import ZerosegError
from zeroseg.export.aoti.runtime import AOTISegmenter
from zeroseg.export.core.formats import BY_NAME
from zeroseg.export.executorch import lower


def set_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide threadpool (XNNPACK's and the optimized kernels' workers)."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(int(threads))


def load_program(path: str | os.PathLike):
    """A `.pte` through ExecuTorch's Python runtime, with a one-line error for a file it will not load."""
    lower.require_executorch()
    from executorch.runtime import Runtime

    try:
        return Runtime.get().load_program(Path(path))
    except Exception as exc:  # RuntimeError / ValueError from the loader
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(
            f"cannot load the ExecuTorch program {path}: {first[:200]}; re-export it"
        ) from None


class Program:
    """A loaded `.pte` called like the AOTInductor package: (pixels, text, bg, offset, size) -> outputs.

    The method is the one of the pixels' static size (loaded once, on first use); the output size
    and the class count are checked against the bounds the program was planned for.
    """

    def __init__(self, path: str | os.PathLike, max_side: int, max_classes: int) -> None:
        self.program, self.name = load_program(path), Path(path).name
        self.max_side, self.max_classes = max_side, max_classes
        self.methods: dict[str, object] = {}

    def method(self, hw: tuple[int, int]):
        """The loaded method of static input `hw`."""
        name = lower.method_name(hw)
        if name not in self.methods:
            if name not in self.program.method_names:
                raise ZerosegError(
                    f"{self.name} has no method for a {hw[0]}x{hw[1]} input; re-export the bundle"
                )
            self.methods[name] = self.program.load_method(name)
        return self.methods[name]

    def __call__(self, pixels, text, bg_thresh, label_offset, output_size):
        h, w = (int(v) for v in torch.as_tensor(output_size).tolist())
        if max(h, w) > self.max_side:
            raise ZerosegError(
                f"{self.name} labels at most {self.max_side} px per side, this image is {h}x{w}: "
                f"re-export with --max-output-side {max(h, w)}"
            )
        if text.shape[0] > self.max_classes:
            raise ZerosegError(
                f"{self.name} takes at most {self.max_classes} classes (background included), got "
                f"{text.shape[0]}: re-export with --max-classes {text.shape[0]}"
            )
        args = lower.carrier_args(pixels, text, bg_thresh, label_offset, (h, w))
        return [torch.as_tensor(o) for o in self.method(tuple(pixels.shape[-2:])).execute(list(args))]


class ExecuTorchSegmenter(AOTISegmenter):
    """Zero-shot segmentation with an ExecuTorch bundle; the same call and results as `zeroseg.Segmenter`."""

    FORMAT = BY_NAME["executorch"].key
    RUNTIME = "executorch"

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
            bundle_dir: the folder `zeroseg-export executorch --out` wrote.
            device: "cpu" (the default and only one).
            precision: "fp32" (segmenter.pte, the default) or "int8" (segmenter.int8.pte, exported
                with --int8).
            threads: ExecuTorch threadpool size (default: leave it; the runtime starts with one
                thread per core). torch's own count is left alone.
            short_side: must be the bundle's (the program is static).
        """
        lower.require_executorch()
        self.precision = precision or "fp32"
        self._et_threads = threads
        super().__init__(bundle_dir, device=device, precision=precision, threads=None, short_side=short_side)

    def _open_program(self, manifest) -> Program:
        from zeroseg.export.core.manifest import verified_file

        name = manifest.graph_file("segmenter", self.precision)
        if self._et_threads is not None:
            set_threads(int(self._et_threads))
        ex = manifest.exporter
        self.static_sizes = {tuple(s["hw"]) for s in ex["static_inputs"]}
        self.static_size = tuple(ex["static_inputs"][0]["hw"])  # batch 1, one image per call
        return Program(
            verified_file(self.bundle, manifest, name), int(ex["max_output_side"]), int(ex["max_classes"])
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The pixels themselves, after the size check: the program runs in `head`."""
        if tuple(pixels.shape[-2:]) not in self.static_sizes:
            sizes = ", ".join(f"{h}x{w}" for h, w in sorted(self.static_sizes))
            raise ZerosegError(
                f"{self.runner.name} is static at {sizes} (batch 1) but this image needs a "
                f"{pixels.shape[-2]}x{pixels.shape[-1]} input; re-export with --aspects including its "
                f"aspect (or --short-side)"
            )
        return pixels
