"""The graph TensorRT parses: the pos-embed resize made parseable, precision written into the ONNX.

TensorRT 11 networks are strongly typed (`BuilderFlag.FP16` / `INT8` are gone), so the precision of
an engine is the precision of its ONNX graph. Starting from a bundle's fp32 `image_encoder.onnx`:

    pos-embed     timm resamples the position embedding with PyTorch's antialiased bicubic, which
                  exports as `Resize(mode=cubic, cubic_coeff_a=-0.5, exclude_outside=1,
                  antialias=1)`; the ONNX-TensorRT parser rejects `antialias=1`. Antialiasing
                  stretches the filter by max(1, in / out), so for an output grid at least as large
                  as the embedding's own grid (up-sampling or the same size) the filter is not
                  stretched and `antialias=0` with the same cubic_coeff_a and exclude_outside is
                  the same computation (measured: <= 6e-6 in ONNX Runtime, tests). TensorRT's
                  importer honours both attributes (`setCubicCoeff`, `setExcludeOutside`). Smaller
                  grids would really differ (by ~1 on this model), so the profiles refuse them.
                  Note: PyTorch's own `antialias=False` is *not* equivalent (Keys a = -0.75 and
                  clamped borders: 0.3 apart when up-sampling), hence this rewrite of the graph
                  rather than a switch in the model.
    fp16          onnxconverter-common's `convert_float_to_float16` with an op and node block list:
                  LayerNormalization, Softmax, the reductions / Pow / Sqrt, Resize and ArgMax, the
                  input normalisation and output L2 normalisation, the grouping block (the
                  patch->segment assignment) and the segment projection stay fp32; I/O stay fp32.
    int8          ONNX Runtime `quantize_static` in QDQ format with TensorRT's constraints: signed
                  int8, symmetric (zero point 0) activations and weights, per tensor, MinMax on the
                  calibration images of `zeroseg.export.core.calibration`; only weight MatMul / Gemm /
                  Conv outside the head (`zeroseg.export.onnx.quantize.weight_nodes`).

Each graph's parity is measured in ONNX Runtime on the CPU (`precision_parity`): label-map pixel
agreement against the bundle's fp32 graph (itself gated against PyTorch at export).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import RUNTIMES

PRECISIONS: tuple[str, ...] = RUNTIMES["tensorrt"].precisions
#: Op types kept in fp32 in the fp16 graph (onnxconverter-common's own list adds Resize, TopK, ...).
FP16_OP_BLOCK_LIST: tuple[str, ...] = (
    "LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSum", "Pow", "Sqrt", "ArgMax", "Resize",
)  # fmt: skip
#: Module scopes (torch.onnx name scopes) kept in float: the head of the image encoder.
HEAD_SCOPES: tuple[str, ...] = ("student.seg_head.grouping", "student.segment_proj")
#: Scopes of the transformer body: everything outside them (input / output normalisation) stays fp32.
BODY_SCOPES: tuple[str, ...] = ("student.encoder.vit", "student.seg_head")
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
TRT_GRAPH_KEY = "zeroseg.trt_graph"


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def antialiased_resizes(model) -> list[str]:
    """Names of the Resize nodes with antialias=1 (what the TensorRT parser rejects).

    Args:
        model: an `onnx.ModelProto`.

    Returns:
        The node names, in graph order (empty for a TensorRT-parseable graph).
    """
    return [n.name for n in model.graph.node if n.op_type == "Resize" and int(_attr(n, "antialias", 0)) == 1]


def make_parseable(model) -> list[str]:
    """Drop antialiasing from the pos-embed resize of `model`, in place (see the module docstring).

    Args:
        model: the bundle's fp32 image encoder (`onnx.ModelProto`).

    Returns:
        Names of the rewritten Resize nodes.

    Raises:
        ZerosegError: an antialiased Resize that is not a cubic, exclude_outside=1, half_pixel one
            (no equivalent without antialias is known for it).
    """
    rewritten = []
    for node in model.graph.node:
        if node.op_type != "Resize" or int(_attr(node, "antialias", 0)) != 1:
            continue
        mode = _attr(node, "mode", b"nearest")
        ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        if mode != b"cubic" or int(_attr(node, "exclude_outside", 0)) != 1 or ctm != b"half_pixel":
            raise ZerosegError(
                f"Resize node {node.name} is antialiased ({mode.decode()}, {ctm.decode()}) and has no "
                "TensorRT equivalent; re-export the bundle with this zeroseg"
            )
        for a in node.attribute:
            if a.name == "antialias":
                a.i = 0
        rewritten.append(node.name)
    return rewritten


def _scopes(node) -> str:
    return next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), "")


def head_nodes(model) -> list[str]:
    """Nodes kept in float in every precision: the head scopes and everything outside the body."""
    keep = []
    for n in model.graph.node:
        s = _scopes(n)
        if any(h in s for h in HEAD_SCOPES) or not any(b in s for b in BODY_SCOPES):
            keep.append(n.name)
    return keep


def fp16_graph(model):
    """The mixed-precision variant of a TensorRT-parseable fp32 image encoder.

    Args:
        model: the fp32 graph (`onnx.ModelProto`, after `make_parseable`).

    Returns:
        A new ModelProto: fp16 weights and activations in the transformer body, fp32 I/O, the op
        types of FP16_OP_BLOCK_LIST and the nodes of `head_nodes` in fp32 behind Cast nodes.
    """
    from onnxconverter_common import float16

    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP16_OP_BLOCK_LIST))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 number ... will be truncated": expected, per constant
        return float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=blocked, node_block_list=head_nodes(model)
        )


class _Feeds:
    """`CalibrationDataReader` over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def int8_graph(src: str | os.PathLike, dst: str | os.PathLike, feeds: Sequence[dict[str, np.ndarray]]) -> int:
    """Write TensorRT-style explicit-quantisation (Q/DQ) int8 variant of graph `src` to `dst`.

    Args:
        src: the TensorRT-parseable fp32 .onnx file.
        dst: where to write the QDQ graph.
        feeds: calibration inputs ({"pixels": (B, 3, H, W) float32}).

    Returns:
        The number of quantised weight nodes.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from zeroseg.export.onnx.quantize import QUANTIZED_OPS, pre_process, weight_nodes

    if not feeds:
        raise ZerosegError("int8 needs calibration images; pass --calib DIR with some images")
    head = set(head_nodes(onnx.load(str(src), load_external_data=False)))  # pre-processing drops the scopes
    with tempfile.TemporaryDirectory(prefix="zeroseg-trt-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(Path(src), pre)
        nodes = [n for n in weight_nodes(onnx.load(str(pre), load_external_data=False)) if n not in head]
        if not nodes:
            raise ZerosegError(f"{src} has no weight MatMul / Gemm / Conv outside the head to quantise")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=False,
                reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": True,
                               "WeightSymmetric": True},
            )  # fmt: skip
    return len(nodes)


def qdq_zero_points(model) -> tuple[int, int]:
    """(number of QuantizeLinear nodes, how many of them have a non-zero or unsigned zero point)."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    bad = 0
    for n in q:
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        if zp is None or zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
            bad += 1
    return len(q), bad


def pos_embed_error(model, height: int, width: int) -> float:
    """Max abs difference, at input size (height, width), between the antialiased pos-embed resize of
    `model` and its TensorRT-parseable rewrite, both in ONNX Runtime (~1e-8 for grids >= the native one).

    Args:
        model: the bundle's fp32 image encoder (antialiased, `onnx.ModelProto`).
        height: input height in pixels (a patch multiple).
        width: input width in pixels.

    Returns:
        The max abs error over the resampled embedding; 0.0 when the graph has no antialiased Resize.
    """
    import onnx

    from zeroseg.export.onnx.runtime import open_session

    names = antialiased_resizes(model)
    if not names:
        return 0.0
    outs = []
    for rewrite in (False, True):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        if rewrite:
            make_parseable(m)
        node = next(n for n in m.graph.node if n.name == names[0])
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.output[0]))
        with tempfile.TemporaryDirectory(prefix="zeroseg-pos-") as tmp:
            path = Path(tmp) / "probe.onnx"
            onnx.save(m, str(path))
            session = open_session(path, threads=1)
            pixels = np.zeros((1, 3, height, width), dtype=np.float32)
            outs.append(session.run([node.output[0]], {"pixels": pixels})[0])
    return float(np.abs(outs[0] - outs[1]).max())


def graph_labels(
    session, case, text, *, logit_scale: float, bg_thresh: float, label_offset: int, head: str = "paper"
) -> tuple:
    """An image-encoder session's outputs on one parity case and `head`'s reference label maps."""
    import torch

    from zeroseg.export.core.parity import reference_head

    segments, maps = session.run(None, {"pixels": case.pixels})
    seg_t, maps_t = torch.from_numpy(segments), torch.from_numpy(maps)
    labels = [
        reference_head(
            head, seg_t[j : j + 1], text, logit_scale, maps_t[j : j + 1], case.out_size, bg_thresh,
            label_offset,
        ).labels[0].numpy()
        for j in range(segments.shape[0])
    ]  # fmt: skip
    return segments, maps, np.stack(labels)


def precision_parity(
    reference, session, cases, text, *, logit_scale: float, bg_thresh: float, label_offset: int,
    head: str = "paper",
) -> dict:  # fmt: skip
    """Agreement of an image-encoder graph with a reference one (both ONNX Runtime sessions).

    Args:
        reference: the fp32 graph's session (the bundle's, gated against PyTorch at export).
        session: the graph under test.
        cases: `zeroseg.export.core.parity.GateCase` batches inside the engine's profile.
        text: class embeddings (C, D) as a torch tensor.
        logit_scale: the checkpoint's logit scale.
        bg_thresh: background threshold of the head.
        label_offset: label of the first prompt.
        head: the head the engine's labels are painted with ("paper" or "dense", in PyTorch).

    Returns:
        pixel_agreement (label maps), embeddings_max_abs_error, assignment_mismatch_fraction,
        pixels, images and the per-case agreement.
    """
    kw = {"logit_scale": logit_scale, "bg_thresh": bg_thresh, "label_offset": label_offset, "head": head}
    agree = total = mismatch = cells = images = 0
    emb = 0.0
    per_case = []
    for case in cases:
        ref_seg, ref_maps, ref_labels = graph_labels(reference, case, text, **kw)
        seg, maps, labels = graph_labels(session, case, text, **kw)
        a = int((labels == ref_labels).sum())
        agree, total = agree + a, total + labels.size
        mismatch, cells = mismatch + int((maps != ref_maps).sum()), cells + maps.size
        emb = max(emb, float(np.abs(seg - ref_seg).max()))
        images += case.pixels.shape[0]
        hw = list(case.pixels.shape[2:])
        per_case.append({"case": case.name, "input_hw": hw, "pixel_agreement": a / labels.size})
    return {
        "pixel_agreement": agree / max(1, total),
        "embeddings_max_abs_error": emb,
        "assignment_mismatch_fraction": mismatch / max(1, cells),
        "pixels": total,
        "images": images,
        "cases": per_case,
    }
