"""The backends `zeroseg-bench` puts side by side: what each one is, whether it can run here, how to build it.

Every backend is a segmenter with the library's common call (`zeroseg.infer.base.SegmenterBase`),
so the bench times one pipeline through all of them:

    torch             `zeroseg.Segmenter`, PyTorch eager fp32: the baseline every ratio is taken against
    compile           the same, its student's `segment` under `torch.compile` (inductor)
    onnxruntime       `OnnxSegmenter` on the bundle's fp32 end-to-end graph
    onnxruntime-int8  `OnnxSegmenter` on its int8 graph (weight-only MatMul/Gemm/Conv, `--int8` mode)
    onnxruntime-noflash  A/B: the fused fp32 graph, its sessions created with ORT_DISABLE_FLASH_ATTENTION=1
                      (ONNX Runtime's MultiHeadAttention CPU kernel reads it in its constructor, so the
                      same graph runs the unfused-kernel attention path)
    onnxruntime-unfused  A/B: a bundle exported with `fuse_attention=False` (plain MatMul/Softmax attention)
    onnxruntime-int8-attn  static int8 of the weight MatMuls and attention's Q.K^T and P.V products
                      (`int8_attention="qk+pv"`), exported into its own bundle
    onnxruntime-int8-qk  the same with Q.K^T only in int8 (`int8_attention="qk"`; P.V stays fp32)
    openvino          `OpenVINOSegmenter`: OpenVINO's CPU plugin on the same fp32 ONNX graph
    aoti              `AOTISegmenter`: the AOTInductor package of the end-to-end graph
    executorch        `ExecuTorchSegmenter`: the end-to-end graph lowered to ExecuTorch's XNNPACK delegate
    executorch-int8   the same bundle's PT2E static int8 program (XNNPACK quantizer, nn.Linear layers)
    tensorrt          `TRTSegmenter`: a TensorRT fp16 engine of the image encoder (GPU)
    maskclip          `MaskCLIPSegmenter`: the training-free baseline on the checkpoint's teacher
    clearclip, sclip, naclip  the newer training-free baselines on the same teacher (`MaskCLIPSegmenter`
                      modes; run only when --backends names them, see `OPT_IN`)

`unavailable` says in one line why a backend cannot run on this machine (a missing package, no GPU,
no C++ compiler, a bundle where a checkpoint is needed); `build` makes it, exporting the bundle it
needs into the cache first (`zeroseg.bench.compare.engines`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase


@dataclass(frozen=True)
class Backend:
    """One row family of the table.

    fused: the engine runs the encoder and the head in one call (`forward` passes the pixels on),
    so the bench reports their sum, not each. gate: the pixel agreement with torch fp32 below which
    the row is flagged (None: a different method, not an engine of the same model). int8_ops:
    the FLOP groups (`zeroseg.bench.compare.flops`) an int8 row runs in int8, for its peak.
    """

    name: str
    precision: str
    fused: bool
    gate: float | None
    what: str
    int8_ops: tuple[str, ...] = ()


#: Agreement gates (fraction of pixels equal to torch fp32), the export gates' own values.
FP32_GATE = 0.999
FP16_GATE = 0.995
INT8_GATE = 0.98
#: The FLOP groups a graph quantised with int8 attention runs in int8 (both products; Q.K^T only).
INT8_ALL = ("weights", "attention")
INT8_QK = ("weights", "attention_qk")

BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("torch", "fp32", False, None, "zeroseg.Segmenter, PyTorch eager"),
        Backend("compile", "fp32", False, FP32_GATE, "zeroseg.Segmenter, student under torch.compile"),
        Backend("onnxruntime", "fp32", True, FP32_GATE, "OnnxSegmenter, ONNX Runtime CPU"),
        Backend("onnxruntime-int8", "int8", True, INT8_GATE, "OnnxSegmenter(precision='int8')", ("weights",)),
        Backend("onnxruntime-int8-attn", "int8", True, INT8_GATE, "OnnxSegmenter, int8 attention", INT8_ALL),
        Backend("onnxruntime-int8-qk", "int8", True, INT8_GATE, "OnnxSegmenter, int8 Q.K^T", INT8_QK),
        Backend("onnxruntime-noflash", "fp32", True, FP32_GATE, "OnnxSegmenter, no flash kernel (A/B)"),
        Backend("onnxruntime-unfused", "fp32", True, FP32_GATE, "OnnxSegmenter, unfused graph (A/B)"),
        Backend("openvino", "fp32", True, FP32_GATE, "OpenVINOSegmenter, OpenVINO CPU plugin"),
        Backend("aoti", "fp32", True, FP32_GATE, "AOTISegmenter, AOTInductor package"),
        Backend("executorch", "fp32", True, FP32_GATE, "ExecuTorchSegmenter, XNNPACK delegate"),
        Backend(
            "executorch-int8", "int8", True, INT8_GATE, "ExecuTorchSegmenter(precision='int8')", ("weights",)
        ),
        Backend("tensorrt", "fp16", False, FP16_GATE, "TRTSegmenter, TensorRT engine (GPU)"),
        Backend("maskclip", "fp32", False, None, "MaskCLIPSegmenter on the checkpoint's teacher"),
        Backend("clearclip", "fp32", False, None, "MaskCLIPSegmenter(mode='clearclip'), ClearCLIP"),
        Backend("sclip", "fp32", False, None, "MaskCLIPSegmenter(mode='sclip'), SCLIP"),
        Backend("naclip", "fp32", False, None, "MaskCLIPSegmenter(mode='naclip'), NACLIP"),
    )
}
NAMES: tuple[str, ...] = tuple(BACKENDS)
#: Rows of the training-free baselines (another network on the teacher: no agreement, no FLOPs).
BASELINE_ROWS: tuple[str, ...] = ("maskclip", "clearclip", "sclip", "naclip")
#: Rows run only when --backends names them: the newer baselines (the default run keeps the one the
#: proof's frontier found strongest on the bundled teacher; docs/proof.md).
OPT_IN: tuple[str, ...] = ("clearclip", "sclip", "naclip")
DEFAULT_NAMES: tuple[str, ...] = tuple(n for n in NAMES if n not in OPT_IN)
#: Which exported artefact each backend runs (None: the checkpoint itself).
ARTEFACT: dict[str, str | None] = {
    "torch": None,
    "compile": None,
    "onnxruntime": "onnx",
    "onnxruntime-int8": "onnx",
    "onnxruntime-int8-attn": "onnx-int8-attn",
    "onnxruntime-int8-qk": "onnx-int8-qk",
    "onnxruntime-noflash": "onnx",
    "onnxruntime-unfused": "onnx-unfused",
    "openvino": "onnx",
    "aoti": "aoti",
    "executorch": "executorch",
    "executorch-int8": "executorch",
    "tensorrt": "trt",
    **{name: None for name in BASELINE_ROWS},
}


def parse_backends(text: str | None) -> tuple[str, ...] | None:
    """'torch,onnxruntime' -> ('torch', 'onnxruntime'); None (all) for no text; one line for a typo."""
    if text is None or not text.strip():
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ZerosegError(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return names


@dataclass
class Source:
    """What the bench was given: a checkpoint, or an exported bundle of one format, and the options."""

    checkpoint: Path | None
    bundles: dict[str, Path]  # artefact kind -> folder given by the user (else exported on the fly)
    device: torch.device
    threads: int
    short_side: int | None
    labels: list[list[str]]
    int8: str = "static"
    teacher: str | None = None
    bundled: bool = False


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


def unavailable(name: str, src: Source) -> str | None:
    """Why backend `name` cannot run with this source on this machine (one line), or None."""
    kind = ARTEFACT[name]
    cpu = src.device.type == "cpu"
    if src.checkpoint is None and (kind is None or kind not in src.bundles):
        given = ", ".join(sorted(src.bundles)) or "no"
        return f"needs a checkpoint (or a {kind} bundle); a {given} bundle was given"
    if name in BASELINE_ROWS and src.teacher is None and not src.bundled:
        return "needs the checkpoint's teacher: pass --teacher MODEL:/path or a teacher file"
    if name in ("compile", "aoti") and _compiler() is None:
        return "needs a C++ compiler for Inductor (apt install g++)"
    if name.startswith("onnxruntime") or name == "openvino":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if not cpu:
            return "runs on the CPU here (the CUDA provider needs onnxruntime-gpu); use --device cpu"
    needs = {"onnxruntime-unfused": "fuse_attention", "onnxruntime-int8-attn": "int8_attention",
             "onnxruntime-int8-qk": "int8_attention"}  # fmt: skip
    if name in needs and not exporter_has(option := needs[name]):
        return f"needs the ONNX exporter's ExportSettings.{option} option, not in this build"
    if name == "openvino":
        from zeroseg.export.openvino.runtime import openvino_unavailable

        return openvino_unavailable()
    if name == "aoti" and not cpu:
        return "the AOTInductor bundle is compiled for the CPU; use --device cpu"
    if name.startswith("executorch"):
        if importlib.util.find_spec("executorch") is None:
            return "ExecuTorch is not installed (pip install 'zeroseg[edge]')"
        if not cpu:
            return "runs on the CPU (XNNPACK); use --device cpu"
    if name == "tensorrt":
        from zeroseg.export.tensorrt.build import tensorrt_unavailable

        return tensorrt_unavailable() or (None if not cpu else "runs on a CUDA GPU; use --device cuda")
    return None


#: Backend -> (zeroseg.load's runtime, precision) for the rows that run an exported bundle.
RUNTIME_OF: dict[str, tuple[str, str | None]] = {
    "onnxruntime": ("onnxruntime", "fp32"),
    "onnxruntime-int8": ("onnxruntime", "int8"),
    "onnxruntime-int8-attn": ("onnxruntime", "int8"),
    "onnxruntime-int8-qk": ("onnxruntime", "int8"),
    "onnxruntime-noflash": ("onnxruntime", "fp32"),
    "onnxruntime-unfused": ("onnxruntime", "fp32"),
    "openvino": ("openvino", "fp32"),
    "aoti": ("aoti", "fp32"),
    "executorch": ("executorch", "fp32"),
    "executorch-int8": ("executorch", "int8"),
    "tensorrt": ("tensorrt", None),
}


def exporter_has(option: str) -> bool:
    """Whether the ONNX exporter takes `option` (`ExportSettings.fuse_attention`, `.int8_attention`)."""
    from zeroseg.export.onnx.export import ExportSettings

    return option in {f.name for f in dataclasses.fields(ExportSettings)}


#: Environment variables set while a backend's sessions are created (the A/B rows' switch).
SESSION_ENV: dict[str, dict[str, str]] = {"onnxruntime-noflash": {"ORT_DISABLE_FLASH_ATTENTION": "1"}}


@contextlib.contextmanager
def session_env(name: str) -> Iterator[None]:
    """Backend `name`'s `SESSION_ENV` set inside the block (the previous values restored after)."""
    wanted = SESSION_ENV.get(name, {})
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def graph_fused_ops(seg) -> dict[str, int] | None:
    """{"com.microsoft.<op>": count} of the fused attention ops in an ONNX row's end-to-end graph."""
    bundle, manifest = getattr(seg, "bundle", None), getattr(seg, "manifest", None)
    if bundle is None or manifest is None or "segmenter" not in getattr(manifest, "graphs", {}):
        return None
    import onnx

    path = Path(bundle) / manifest.graph_file("segmenter", getattr(seg, "precision", "fp32"))
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    counts: dict[str, int] = {}
    for n in nodes:
        if n.domain == "com.microsoft" and n.op_type in ("MultiHeadAttention", "Attention"):
            counts[f"{n.domain}.{n.op_type}"] = counts.get(f"{n.domain}.{n.op_type}", 0) + 1
    return counts


def build(name: str, src: Source, artefact: Callable[[str], Path]) -> SegmenterBase:
    """The segmenter of backend `name` through `zeroseg.load`; `artefact(kind)` gives (exporting if need
    be) its bundle folder."""
    from zeroseg.export.loader import load

    short = src.short_side
    threads = src.threads or None
    if name in ("torch", "compile"):
        seg = load(src.checkpoint, device=src.device, short_side=short)
        if name == "compile":
            seg.model.segment = torch.compile(seg.model.segment)
        return seg
    if name in RUNTIME_OF:
        runtime, precision = RUNTIME_OF[name]
        device = src.device if name == "tensorrt" else None
        with session_env(name):
            seg = load(artefact(ARTEFACT[name]), runtime=runtime, precision=precision, device=device,
                       threads=threads, short_side=short)  # fmt: skip
        if name == "onnxruntime-noflash" and not graph_fused_ops(seg):
            raise ZerosegError("its graph has no fused attention (MultiHeadAttention): nothing to switch off")
        return seg
    if name in BASELINE_ROWS:
        return _baseline(src, name)
    raise ZerosegError(f"unknown backend {name!r}")


def _baseline(src: Source, name: str) -> SegmenterBase:
    """A training-free baseline (`BASELINE_ROWS`) on the checkpoint's teacher, with the checkpoint's
    prompt templates.

    For the bundled model: the bundled teacher with the settings the ShapeWorld frontier tuned for
    this baseline at the bundled model's short side (background threshold and prompt); otherwise the
    segmenter's defaults.
    """
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.infer.factory import baseline_mode
    from zeroseg.infer.maskclip import MaskCLIPSegmenter

    ckpt = load_checkpoint(src.checkpoint, with_train_state=False)
    teacher, tuned = src.teacher, {}
    if teacher is None:
        from zeroseg.bundled import bundled_teacher
        from zeroseg.shapeworld.demo import bundled_baseline_settings

        teacher, tuned = str(bundled_teacher()), bundled_baseline_settings(name)
    return MaskCLIPSegmenter.from_spec(teacher, device=src.device, templates=list(ckpt.templates),
                                       mode=baseline_mode(name), **tuned)  # fmt: skip
