"""int8 for CPUs: ONNX Runtime dynamic and static (QDQ) quantisation of the weight MatMuls.

Both start from `quant_pre_process` (symbolic shape inference + ORT's basic optimisations: "a tensor
with unknown shape can not be quantized") and quantise only MatMul / Gemm / Conv nodes whose weight
is a constant, so attention's Q.K^T and attn.V, the head's similarity MatMul, LayerNorm, Softmax,
GELU and the label upsampling stay in float:

    dynamic  `quantize_dynamic`, int8 weights (per tensor), activations quantised per call.
    static   `quantize_static` in QDQ format, u8 activations / s8 weights, MinMax calibration on
             images (`--calib DIR`, default 64 generated ShapeWorld scenes).

With `attention` (static only, `--int8 static --int8-attention qk|qk+pv`) attention's activation x
activation products are quantised too: Q.K^T ("qk"), and with "qk+pv" also P.V, u8 x u8 QDQ
calibrated like the other activations. The graph's attention is first fused (if it was not) and
expanded back into MatMul / Softmax with named products (`zeroseg.export.onnx.fuse.expanded_copy`),
so exactly the scaled dot-product attentions are quantised, never the head's similarity MatMuls;
the int8 graph is then unfused (the flash kernel is fp32 only). P.V is the risky one: the softmax
probabilities, mostly far below 1/255 at a thousand tokens, share one u8 scale. Without `attention`
a fused graph stays fused: the weight MatMuls are quantised and attention runs in fp32.

Both keep the weights to 7 bits (`reduce_range`): ORT's u8 x s8 kernels on x86 CPUs without VNNI
(AVX2, AVX-512 without VNNI) add pairs of products in int16 (`vpmaddubsw`), which saturates with
8-bit weights; the same int8 file then gives different labels on different hosts. ORT's guidance:
reduce_range "is not needed on machines supporting VNNI", but a bundle does not know where it will
run (README, "int8" for the measured difference).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from zeroseg.errors import ZerosegError

MODES: tuple[str, ...] = ("dynamic", "static")
#: `--int8-attention` choices -> the attention products they quantise ("qk": Q.K^T, "pv": P.V).
ATTENTION_CHOICES: dict[str, tuple[str, ...]] = {"qk": ("qk",), "qk+pv": ("qk", "pv")}
QUANTIZED_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
#: 7-bit weights, so that u8 x s8 products cannot saturate on x86 CPUs without VNNI (module docstring).
REDUCE_RANGE = True


def pre_process(src: Path, dst: Path) -> None:
    """ONNX Runtime's `quant_pre_process` of `src` into `dst` (ONNX's shape inference as the fallback)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference gives up on some dynamic graphs: ONNX's is enough here
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def weight_nodes(model) -> list[str]:
    """Names of the MatMul / Gemm / Conv nodes whose second input is a constant (a weight)."""
    consts = {init.name for init in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in consts
    ]


def check_attention_choice(choice: str, mode: str | None) -> tuple[str, ...]:
    """The products `--int8-attention CHOICE` quantises (refused: a bad choice, a mode but static)."""
    if choice not in ATTENTION_CHOICES:
        raise ZerosegError(f"--int8-attention must be one of {', '.join(ATTENTION_CHOICES)}, got {choice!r}")
    if mode != "static":
        raise ZerosegError("--int8-attention quantises calibrated attention products: add --int8 static")
    return ATTENTION_CHOICES[choice]


def attention_nodes(model, products: tuple[str, ...] = ("qk", "pv")) -> list[str]:
    """Names of the attention products of a graph expanded by `zeroseg.export.onnx.fuse.unfuse_attention`
    ("qk": Q.K^T, "pv": P.V); the head's similarity MatMuls, not being attention, are never among them."""
    from zeroseg.export.onnx.fuse import EXPANDED_PREFIX

    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.name.startswith(EXPANDED_PREFIX)
        and n.name.rsplit("/", 1)[-1] in products
    ]


class _Reader:
    """`CalibrationDataReader` over precomputed feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_graph(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    mode: str,
    *,
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
    attention: tuple[str, ...] = (),
) -> list[str]:
    """Write the int8 variant of graph `src` to `dst`; returns the names of the quantised nodes.

    Args:
        src: the fp32 .onnx file (fused or not).
        dst: the int8 .onnx file to write.
        mode: "dynamic" or "static".
        calibration: static mode: the graph's input feeds to calibrate on.
        attention: static mode: the attention products to quantise too, a value of
            `ATTENTION_CHOICES` (empty: weight MatMuls only; module docstring).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode not in MODES:
        raise ZerosegError(f"--int8 must be one of {', '.join(MODES)}, got {mode!r}")
    if attention and (mode != "static" or not set(attention) <= {"qk", "pv"}):
        raise ZerosegError(
            f"attention products {attention} with --int8 {mode}: use --int8 static and qk / pv"
        )
    with tempfile.TemporaryDirectory(prefix="zeroseg-quant-") as tmp:
        pre, source = Path(tmp) / "pre.onnx", Path(src)
        if attention:  # fused (if it was not) then expanded: the products get names to quantise
            from zeroseg.export.onnx.fuse import expanded_copy

            (Path(tmp) / "expanded.onnx").write_bytes(expanded_copy(source))
            source = Path(tmp) / "expanded.onnx"
        pre_process(source, pre)
        pre_model = onnx.load(str(pre), load_external_data=False)
        nodes = weight_nodes(pre_model) + (attention_nodes(pre_model, attention) if attention else [])
        del pre_model
        if mode == "dynamic":
            quantize_dynamic(
                str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_quantize=nodes, per_channel=False, reduce_range=REDUCE_RANGE,
                extra_options={"MatMulConstBOnly": True},
            )  # fmt: skip
            return nodes
        if calibration is None:
            raise ZerosegError("static int8 needs calibration images (--calib DIR)")
        quantize_static(
            str(pre), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=False,
            reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": not attention, "CalibTensorRangeSymmetric": False},
        )  # fmt: skip
    return nodes
