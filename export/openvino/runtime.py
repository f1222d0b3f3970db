"""`OpenVINOSegmenter`: an ONNX bundle from `zeroseg-export onnx` run by Intel OpenVINO on the CPU.

OpenVINO reads the bundle's own `segmenter.onnx` (no conversion step, no second file to keep in
sync), so everything but the session is `OnnxSegmenter`'s: the manifest and checksum checks, the
vocabulary, the numpy resize, batching by size. Only `_open` differs: it compiles the graph for
OpenVINO's CPU plugin with a latency hint and an explicit thread count, and wraps the compiled
model in the `run(None, feed)` call ONNX Runtime's sessions have. Outputs are taken by position,
since OpenVINO may rename an output that is also an intermediate tensor.

Fused attention: OpenVINO's ONNX frontend reads the bundle's `com.microsoft.MultiHeadAttention`
nodes itself, so the fused file is compiled as it is; should a frontend refuse them, the graph is
expanded back into MatMul / Softmax in memory (`zeroseg.export.onnx.fuse.unfused_copy`) and read
from bytes, so the bundle still ships one file per graph (`attention="expand"` forces that path).
Either way the CPU plugin's Snippets "MHA tokenization" should turn each attention into one
`Subgraph` node: `runtime_layers()` returns the compiled model's layer-type counts and
`attention_subgraphs()` the Subgraph nodes that hold a Softmax, so that this can be checked.

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
from zeroseg.export.onnx.runtime import OnnxSegmenter, check_fused_ops, usable_cpus
from zeroseg.export.openvino.sigstack import kept_signal_stack

ATTENTION_MODES = ("auto", "expand")


def runtime_layer_counts(compiled) -> dict[str, int]:
    """{layer type: count} of an OpenVINO compiled model's runtime graph (rt_info "layerType")."""
    counts: dict[str, int] = {}
    with kept_signal_stack():
        ops = compiled.get_runtime_model().get_ops()
    for op in ops:
        kind = str(op.get_rt_info()["layerType"].astype(str))
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def attention_subgraph_count(compiled) -> int:
    """Snippets `Subgraph` nodes of a compiled model whose original layers include a Softmax (attention)."""
    found = 0
    with kept_signal_stack():
        ops = compiled.get_runtime_model().get_ops()
    for op in ops:
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) != "Subgraph":
            continue
        names = str(info["originalLayersNames"].astype(str)).lower()
        found += "softmax" in names
    return found


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
        with kept_signal_stack():
            self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)

    def run(self, output_names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in the graph's order (`output_names` must be None, as this package passes)."""
        if output_names is not None:
            raise ValueError("OpenVINO sessions return every output; pass None")
        with kept_signal_stack():
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
        attention: str = "auto",
    ) -> None:
        """Open a bundle after checking its manifest and the graphs' checksums.

        Args:
            bundle_dir: the folder `zeroseg-export onnx --out` wrote.
            device: "cpu" (OpenVINO's CPU plugin; the default).
            precision: "fp32" (the bundle's fp32 graph; the default).
            threads: inference threads (default: the CPUs this process may use).
            short_side: network input short side (default: the one the bundle was exported for).
            attention: "auto" (read fused graphs as they are, expanding them only if OpenVINO refuses
                them) or "expand" (always expand MultiHeadAttention in memory; for A/B runs).
        """
        if attention not in ATTENTION_MODES:
            raise ZerosegError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
        self.attention = attention
        self.attention_read: dict[str, str] = {}  # graph -> "as exported" | "expanded in memory"
        RUNTIMES["openvino"].check(device=device, precision=precision, threads=threads, short_side=short_side)
        reason = openvino_unavailable()
        if reason is not None:
            raise ZerosegError(reason)
        super().__init__(bundle_dir, threads=threads, precision="fp32", short_side=short_side)

    def _open(self, graph: str, precision: str):
        """The graph compiled for OpenVINO's CPU plugin, after checking its file's sha256 and fused ops."""
        import openvino as ov

        if precision != "fp32":
            raise ZerosegError("the OpenVINO runtime runs the bundle's fp32 graphs only")
        path = verified_file(self.bundle, self.manifest, self.manifest.graph_file(graph, precision))
        check_fused_ops(self.manifest, graph, precision, path)
        config = {  # f32 asked for: on AMX / AVX512_BF16 CPUs the plugin's default is bf16
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": int(self.threads) if self.threads else usable_cpus(),
        }
        with kept_signal_stack():  # OpenVINO leaves the thread's sigaltstack dangling (sigstack.py)
            return self._compile(ov, graph, path, config)

    def _compile(self, ov, graph: str, path, config: dict) -> _CompiledSession:
        """Read `path` (expanding fused attention if need be) and compile it for the CPU plugin."""
        core = ov.Core()
        fused = bool(self.manifest.graphs[graph].get("fused_ops"))
        try:
            if fused and self.attention == "expand":
                raise _Expand
            model, how = core.read_model(str(path)), "as exported"
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
            if not fused:
                raise _refusal(path, exc) from None
            from zeroseg.export.onnx.fuse import unfused_copy

            model, how = core.read_model(unfused_copy(path)), "expanded in memory"
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise _refusal(path, exc) from None
        self.attention_read[graph] = how
        return _CompiledSession(compiled)

    def runtime_layers(self, graph: str = "segmenter") -> dict[str, int]:
        """{layer type: count} of the compiled `graph` ("segmenter" or "image_encoder") as the CPU runs it."""
        return runtime_layer_counts(self._compiled(graph))

    def attention_subgraphs(self, graph: str = "segmenter") -> int:
        """How many attention blocks of `graph` the CPU plugin runs as one Snippets `Subgraph` node."""
        return attention_subgraph_count(self._compiled(graph))

    def _compiled(self, graph: str):
        if graph == "segmenter":
            return self.session.compiled
        if graph == "image_encoder":
            if self._encoder_session is None:
                self._encoder_session = self._open("image_encoder", "fp32")
            return self._encoder_session.compiled
        raise ZerosegError(f"graph must be segmenter or image_encoder, got {graph!r}")


class _Expand(Exception):
    """Internal: take the expanded-in-memory path."""


def _refusal(path, exc: Exception) -> ZerosegError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ZerosegError(f"OpenVINO cannot compile {path}: {first[:200]}")
