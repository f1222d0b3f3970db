"""`OpenVINOSegmenter`: an ONNX bundle from `zeroseg-export onnx` run by Intel OpenVINO on the CPU.

OpenVINO reads the bundle's own `segmenter.onnx` (no conversion step, no second file to keep in
sync), so everything but the session is `OnnxSegmenter`'s: the manifest and checksum checks, the
vocabulary, the numpy resize, batching by size. Only `_open` differs: it compiles the graph for
OpenVINO's CPU plugin with a latency hint and an explicit thread count, and wraps the compiled
model in the `run(None, feed)` call ONNX Runtime's sessions have. Outputs are taken by position,
since OpenVINO may rename an output that is also an intermediate tensor.

Only the fp32 graphs are offered: the bundle's int8 graphs use ONNX Runtime's integer operators,
and OpenVINO's own int8 (NNCF post-training quantisation) pays off only on CPUs with VNNI or AMX
(see README, "Benchmarks").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import RUNTIMES
from zeroseg.export.core.manifest import verified_file
from zeroseg.export.onnx.runtime import OnnxSegmenter, usable_cpus


def openvino_unavailable() -> str | None:
    """Why OpenVINO cannot run here (one line), or None when it can."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed: pip install 'zeroseg[openvino]'"
    return None


class _CompiledSession:
    """An OpenVINO compiled model behind ONNX Runtime's `run(None, feed)` call."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in the graph's order (`output_names` must be None, as this package passes)."""
        if output_names is not None:
            raise ValueError("OpenVINO sessions return every output; pass None")
        result = self.request.infer(feed)
        return [np.asarray(result[out]) for out in self.outputs]


class OpenVINOSegmenter(OnnxSegmenter):
    """Zero-shot segmentation with an ONNX bundle on OpenVINO's CPU plugin; `zeroseg.Segmenter`'s call."""

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        *,
        device=None,
        precision: str | None = None,
        threads: int | None = None,
        short_side: int | None = None,
    ) -> None:
        """Open a bundle after checking its manifest and the graphs' checksums.

        Args:
            bundle_dir: the folder `zeroseg-export onnx --out` wrote.
            device: "cpu" (OpenVINO's CPU plugin; the default).
            precision: "fp32" (the bundle's fp32 graph; the default).
            threads: inference threads (default: the CPUs this process may use).
            short_side: network input short side (default: the one the bundle was exported for).
        """
        RUNTIMES["openvino"].check(device=device, precision=precision, threads=threads, short_side=short_side)
        reason = openvino_unavailable()
        if reason is not None:
            raise ZerosegError(reason)
        super().__init__(bundle_dir, threads=threads, precision="fp32", short_side=short_side)

    def _open(self, graph: str, precision: str):
        """The graph compiled for OpenVINO's CPU plugin, after checking its file's sha256."""
        import openvino as ov

        if precision != "fp32":
            raise ZerosegError("the OpenVINO runtime runs the bundle's fp32 graphs only")
        path = verified_file(self.bundle, self.manifest, self.manifest.graph_file(graph, precision))
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(self.threads) if self.threads else usable_cpus(),
        }
        try:
            compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZerosegError(f"OpenVINO cannot compile {path}: {first[:200]}") from None
        return _CompiledSession(compiled)
