"""int8 for CPUs: ONNX Runtime dynamic and static (QDQ) quantisation of the weight MatMuls.

Both start from `quant_pre_process` (symbolic shape inference + ORT's basic optimisations: "a tensor
with unknown shape can not be quantized") and quantise only MatMul / Gemm / Conv nodes whose weight
is a constant, so attention's Q.K^T and attn.V, the head's similarity MatMul, LayerNorm, Softmax,
GELU and the label upsampling stay in float:

    dynamic  `quantize_dynamic`, int8 weights (per tensor), activations quantised per call.
    static   `quantize_static` in QDQ format, u8 activations / s8 weights, MinMax calibration on
             images (`--calib DIR`, default 64 generated ShapeWorld scenes).

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
) -> None:
    """Write the int8 variant of graph `src` to `dst`.

    Args:
        src: the fp32 .onnx file.
        dst: the int8 .onnx file to write.
        mode: "dynamic" or "static".
        calibration: static mode: the graph's input feeds to calibrate on.
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
    with tempfile.TemporaryDirectory(prefix="zeroseg-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(Path(src), pre)
        nodes = weight_nodes(onnx.load(str(pre), load_external_data=False))
        if mode == "dynamic":
            quantize_dynamic(
                str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_quantize=nodes, per_channel=False, reduce_range=REDUCE_RANGE,
                extra_options={"MatMulConstBOnly": True},
            )  # fmt: skip
            return
        if calibration is None:
            raise ZerosegError("static int8 needs calibration images (--calib DIR)")
        quantize_static(
            str(pre), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=False,
            reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True, "CalibTensorRangeSymmetric": False},
        )  # fmt: skip
