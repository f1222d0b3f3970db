"""Fused attention in the ONNX bundle (`zeroseg.export.onnx.fuse`): the image graphs hold
com.microsoft.MultiHeadAttention and the manifest counts it; the expansion back is exact; a graph whose
fused ops were stripped is refused at load (ONNX Runtime and OpenVINO) even with re-signed checksums;
OpenVINO runs our attention as Snippets `Subgraph` nodes; int8 that quantises attention's products."""

from __future__ import annotations

import shutil

import export_helpers as eh
import numpy as np
import onnx
import pytest
from helpers import assert_one_line_error

from zeroseg.errors import ZerosegError
from zeroseg.export import OnnxSegmenter
from zeroseg.export.core.manifest import read_manifest, sha256_file
from zeroseg.export.onnx.fuse import FUSED_OPS, file_op_counts, op_counts, unfuse_attention
from zeroseg.export.onnx.quantize import attention_nodes, quantize_graph, weight_nodes
from zeroseg.export.onnx.runtime import open_session

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # the shared export: ~100 s

MHA = "com.microsoft.MultiHeadAttention"
CLASSES = eh.TINY_CLASSES


@pytest.fixture(scope="module")
def bundle(world, tmp_path_factory):
    """The tiny checkpoint's default (fused) bundle, shared with test_export_onnx."""

    return eh.tiny_bundle(world.checkpoint, tmp_path_factory)[0]


def _pixels(seed: int = 0, hw=(40, 56)) -> np.ndarray:
    return np.random.default_rng(seed).random((2, 3, *hw), dtype=np.float32)


def test_image_graphs_are_fused_and_counted(bundle):
    graphs = read_manifest(bundle).graphs
    for name in ("image_encoder", "segmenter"):
        fused = graphs[name]["fused_ops"]
        assert set(fused) == {MHA} and fused[MHA] >= 2, fused
        assert file_op_counts(bundle / graphs[name]["file"]) == fused
        assert "replace_sdpa_by_mha" in graphs[name]["fusion"]
    assert graphs["text_encoder"]["fused_ops"] == {} and graphs["text_encoder"]["fusion"] is None
    assert graphs["image_encoder"]["fused_ops"] == graphs["segmenter"]["fused_ops"]
    assert "com.microsoft.Attention" in FUSED_OPS  # the packed op would be counted (and refused) too


def test_unfused_graph_gives_the_same_outputs(bundle, tmp_path):
    path = bundle / "image_encoder.onnx"
    model = onnx.load(str(path))
    count = op_counts(model)[MHA]
    assert unfuse_attention(model) == count and op_counts(model) == {}
    onnx.checker.check_model(model, full_check=True)
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert len(attention_nodes(model)) == 2 * count  # Q.K^T and P.V of each block
    feed = {"pixels": _pixels()}
    fused_out = open_session(path, threads=1).run(None, feed)
    plain_out = open_session(plain, threads=1).run(None, feed)
    for a, b in zip(fused_out, plain_out, strict=True):
        assert np.abs(a - b).max() < 1e-5


def _strip_fused(src, dst, graph: str):
    """A copy of the bundle whose `graph` is the unfused equivalent, with every checksum fixed up."""
    shutil.copytree(src, dst)
    file = read_manifest(dst).graphs[graph]["file"]
    model = onnx.load(str(dst / file))
    unfuse_attention(model)
    onnx.save(model, str(dst / file))
    digest = sha256_file(dst / file)
    eh.edit_manifest(dst, lambda data: data["files"].__setitem__(file, digest), resign=True)
    return dst


def test_stripped_fused_ops_are_refused(bundle, tmp_path, cli):
    bad = _strip_fused(bundle, tmp_path / "stripped", "segmenter")
    with pytest.raises(ZerosegError) as exc:
        OnnxSegmenter(bad, threads=1)
    message = str(exc.value)
    assert "segmenter.onnx" in message and "altered after export" in message and "\n" not in message
    assert f"{MHA} x" in message and "holds fused ops none" in message
    image = tmp_path / "x.png"
    eh.smooth_image(40, 40, 0).save(image)
    res = cli("segment", "--engine", str(bad), str(image), "--labels", "cat", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, "altered after export")
    enc_bad = _strip_fused(bundle, tmp_path / "stripped_enc", "image_encoder")
    seg = OnnxSegmenter(enc_bad, threads=1)  # the segmenter is intact; the encoder is refused when used
    with pytest.raises(ZerosegError, match="image_encoder.onnx holds fused ops none"):
        seg.encode(_pixels())


def test_openvino_runs_attention_as_subgraphs(bundle, tmp_path):
    pytest.importorskip("openvino")
    from zeroseg.export.openvino.runtime import OpenVINOSegmenter

    blocks = read_manifest(bundle).graphs["segmenter"]["fused_ops"][MHA]
    seg = OpenVINOSegmenter(bundle, threads=1)
    assert seg.attention_read == {"segmenter": "as exported"}  # OpenVINO's frontend reads the contrib op
    layers = seg.runtime_layers()
    assert layers.get("Subgraph", 0) >= blocks and "MultiHeadAttention" not in layers
    assert seg.attention_subgraphs() == blocks and seg.attention_subgraphs("image_encoder") == blocks
    expanded = OpenVINOSegmenter(bundle, threads=1, attention="expand")
    assert expanded.attention_read == {"segmenter": "expanded in memory"}
    assert expanded.attention_subgraphs() == blocks
    pixels = _pixels(3)  # the fused op read by OpenVINO computes what its expansion computes
    fused_embeddings, expanded_embeddings = seg.encode(pixels)[0], expanded.encode(pixels)[0]
    assert np.abs(fused_embeddings - expanded_embeddings).max() < 1e-4
    with pytest.raises(ZerosegError, match="altered after export"):
        OpenVINOSegmenter(_strip_fused(bundle, tmp_path / "s", "segmenter"), threads=1)
    with pytest.raises(ZerosegError, match="attention must be"):
        OpenVINOSegmenter(bundle, attention="flash")


def test_int8_attention_quantises_the_products(bundle, tmp_path):
    src = bundle / "image_encoder.onnx"
    blocks = file_op_counts(src)[MHA]
    calib = [{"pixels": _pixels(i)[:1]} for i in range(3)]
    weights_only = tmp_path / "w.onnx"
    nodes = quantize_graph(src, weights_only, "static", calibration=calib)
    assert file_op_counts(weights_only) == {MHA: blocks}  # weight-only int8 keeps the flash attention
    both = tmp_path / "a.onnx"
    quantized = quantize_graph(src, both, "static", calibration=calib, attention=("qk", "pv"))
    model = onnx.load(str(both))
    assert op_counts(model) == {}
    assert len(quantized) == len(nodes) + 2 * blocks
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    products = [n for n in model.graph.node if n.name in set(quantized) - set(nodes)]
    assert len(products) == 2 * blocks
    assert all(n.input[0] in dequantized and n.input[1] in dequantized for n in products)
    assert not set(weight_nodes(model)) & {n.name for n in products}
    feed = {"pixels": _pixels(9)[:1]}
    ref = open_session(src, threads=1).run(None, feed)[0]
    out = open_session(both, threads=1).run(None, feed)[0]
    assert out.shape == ref.shape and np.isfinite(out).all()
    qk_only = quantize_graph(src, tmp_path / "q.onnx", "static", calibration=calib, attention=("qk",))
    assert sorted(set(qk_only) - set(nodes)) == sorted(n.name for n in products if n.name.endswith("/qk"))
    with pytest.raises(ZerosegError, match="--int8 static"):
        quantize_graph(src, tmp_path / "d.onnx", "dynamic", attention=("qk",))


def test_flags_reach_the_settings(world, tmp_path, export_cli, monkeypatch):
    from zeroseg.export.onnx import bundle as bundle_module

    seen = []

    def stop(ckpt, settings, folder, **kwargs):
        seen.append(settings)
        raise ZerosegError("stopped by the test")

    monkeypatch.setattr(bundle_module, "build_bundle", stop)
    out = tmp_path / "b"
    export_cli("onnx", world.checkpoint, "--out", out, "--no-fuse-attention")
    export_cli("onnx", world.checkpoint, "--out", out, "--int8", "static", "--int8-attention", "QK")
    assert [(s.fuse_attention, s.int8_attention) for s in seen] == [(False, None), (True, "qk")]
    res = export_cli("onnx", world.checkpoint, "--out", out, "--int8", "dynamic", "--int8-attention", "qk")
    assert_one_line_error(res, "--int8 static")
    res = export_cli("onnx", world.checkpoint, "--out", out, "--int8", "static", "--int8-attention", "all")
    assert_one_line_error(res, "--int8-attention", "qk+pv")
    assert len(seen) == 2 and not out.exists()


def test_openvino_leaves_the_threads_signal_stack_as_it_was(bundle):
    """OpenVINO's CPU plugin repoints the thread's sigaltstack at memory it later frees; a signal
    handled on that thread afterwards (a child's SIGCHLD) killed test workers with SIGSEGV."""
    pytest.importorskip("openvino")
    import faulthandler

    from zeroseg.export.openvino.runtime import OpenVINOSegmenter
    from zeroseg.export.openvino.sigstack import current_signal_stack

    faulthandler.enable()  # gives the thread an alternate stack of its own, as pytest's plugin does
    before = current_signal_stack()
    assert before is not None and before[0]
    seg = OpenVINOSegmenter(bundle, threads=1)
    seg.encode(_pixels(4))
    seg.attention_subgraphs()
    assert current_signal_stack() == before
