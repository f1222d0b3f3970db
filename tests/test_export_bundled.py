"""The bundled ShapeWorld model through ONNX: parity at two sizes, static and dynamic int8 above their
gate, `OnnxSegmenter` labels equal to `Segmenter`'s on ShapeWorld scenes, `zeroseg eval --engine`."""

from __future__ import annotations

import export_helpers as eh
import helpers
import numpy as np
import pytest
import torch

from zeroseg.bundled import bundled_checkpoint
from zeroseg.export import OnnxSegmenter
from zeroseg.export.core import parity
from zeroseg.export.core.manifest import read_manifest
from zeroseg.export.onnx.quantize import quantize_graph
from zeroseg.export.onnx.runtime import open_session
from zeroseg.infer.labels import LabelSpace
from zeroseg.infer.segmenter import Segmenter

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # the int8 ShapeWorld export: ~55 s

COLOURS = [["red"], ["green"], ["blue"], ["yellow"], ["magenta"], ["cyan"]]


def largest_int8_weight(path) -> int:
    """The largest |value| of the int8 weight initializers of a quantised graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    int8 = onnx.TensorProto.INT8
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == int8]
    assert weights, "no int8 weights in the graph"
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """8 ShapeWorld scenes in VOC layout, once per run (the bundle's manifest scores on this copy)."""
    return eh.shared_calib(tmp_path_factory)


@pytest.fixture(scope="module")
def bundle(calib, tmp_path_factory):
    """The bundled checkpoint at its short side (512) and head (dense), with a vocabulary and static
    int8, once per run."""
    return eh.shapeworld_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def torch_model():
    from zeroseg.export.onnx.export import GraphModules
    from zeroseg.text import encode_classes

    ckpt = __import__("zeroseg.checkpoint", fromlist=["load_checkpoint"]).load_checkpoint(
        bundled_checkpoint()
    )
    modules = GraphModules.of(ckpt)
    space = LabelSpace.build(COLOURS, bg_prompt=ckpt.config.bg_prompt)
    text = encode_classes(modules.text_encoder, [list(p) for p in space.prompts], ckpt.templates)
    return ckpt, modules, space, text


def test_fp32_parity_and_static_int8_in_the_manifest(bundle):
    path, lines = bundle
    m = read_manifest(path)
    assert m.preprocess["short_side"] == 512 and m.head == "dense"  # the checkpoint's own
    assert m.parity["segmenter"]["pixel_agreement"] >= parity.FP32_AGREEMENT
    assert m.parity["image_encoder"]["embeddings_max_abs_error"] < 1e-4
    q = m.int8
    assert q["mode"] == "static" and "8 images" in q["calibration"]
    assert q["pixel_agreement_with_fp32"] >= q["threshold"] == parity.INT8_AGREEMENT
    assert q["miou"]["images"] == 8 and q["miou"]["mIoU_change"] > -0.05
    assert (path / "image_encoder.int8.onnx").is_file() and (path / "segmenter.int8.onnx").is_file()
    assert any("looser gate" in line for line in lines)
    # 7-bit weights: u8 x s8 products cannot saturate on x86 without VNNI (export/onnx/quantize.py)
    assert largest_int8_weight(path / "segmenter.int8.onnx") <= 64 and "7 bits" in q["recipe"]


@pytest.mark.parametrize("short_side", [128, 192])
def test_parity_at_other_sizes(bundle, torch_model, short_side):
    """The graphs are dynamic: the same bundle matches PyTorch at other input sizes too."""
    ckpt, modules, space, text = torch_model
    path = bundle[0]
    cases = parity.gate_cases(short_side, ckpt.student_config.patch_size, seed=11)
    figures, _ = parity.image_parity(
        modules.encoder, open_session(path / "image_encoder.onnx", threads=1),
        open_session(path / "segmenter.onnx", threads=1), cases, text,
        logit_scale=ckpt.logit_scale, bg_thresh=ckpt.config.bg_thresh, label_offset=space.label_offset,
        head=ckpt.config.default_head,
    )  # fmt: skip
    assert figures["segmenter"]["pixel_agreement"] >= parity.FP32_AGREEMENT
    assert figures["image_encoder"]["embeddings_max_abs_error"] < 1e-4


def test_dynamic_int8_agrees_with_fp32(bundle, torch_model, tmp_path):
    ckpt, modules, space, text = torch_model
    path = bundle[0]
    cases = parity.gate_cases(ckpt.preprocess.test_short_side, ckpt.student_config.patch_size)
    _, fp32_labels = parity.image_parity(
        modules.encoder, open_session(path / "image_encoder.onnx", threads=1),
        open_session(path / "segmenter.onnx", threads=1), cases, text,
        logit_scale=ckpt.logit_scale, bg_thresh=ckpt.config.bg_thresh, label_offset=space.label_offset,
        head=ckpt.config.default_head,
    )  # fmt: skip
    quantize_graph(path / "segmenter.onnx", tmp_path / "dyn.onnx", "dynamic")
    session = open_session(tmp_path / "dyn.onnx", threads=1)
    agreement = parity.int8_agreement(
        session, cases, text.numpy(), ckpt.config.bg_thresh, space.label_offset, fp32_labels
    )
    assert agreement >= parity.INT8_AGREEMENT
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "dyn.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "LayerNormalization" in ops
    assert largest_int8_weight(tmp_path / "dyn.onnx") <= 64


def test_onnx_segmenter_equals_segmenter_on_scenes(bundle):
    images = eh.scenes(6, seed=21) + [eh.scenes(1, seed=22)[0].resize((320, 240))]
    with helpers.torch_threads(1):
        want = Segmenter(bundled_checkpoint())(images, COLOURS, batch_size=4)
    got = OnnxSegmenter(bundle[0], threads=1)(images, COLOURS, batch_size=4)
    agreement = np.mean([(a.labels == b.labels).mean() for a, b in zip(want, got, strict=True)])
    assert agreement >= 0.999
    for a, b in zip(want, got, strict=True):
        assert np.array_equal(a.segment_labels, b.segment_labels)
        assert a.fractions().keys() == b.fractions().keys()
    int8 = OnnxSegmenter(bundle[0], threads=1, precision="int8")(images, COLOURS, batch_size=4)
    assert np.mean([(a.labels == b.labels).mean() for a, b in zip(got, int8, strict=True)]) >= 0.98
    assert torch.get_num_threads() >= 1


def test_eval_engine_int8_scores_like_the_manifest(bundle, calib, cli):
    res = cli("eval", "--engine", bundle[0], "--dataset", calib, "--precision", "int8", "-q")
    assert res.code == 0, res.err
    miou = eh.parse_miou(res.out)
    assert miou == pytest.approx(read_manifest(bundle[0]).int8["miou"]["mIoU_int8"], abs=1e-4)
