"""`zeroseg-export onnx` on the tiny test checkpoint: the bundle, its manifest, parity, `OnnxSegmenter`
against `Segmenter` (also with torch unimportable), the CLIs, every refusal, and the int8 gate refusing
a random model. int8 that passes its gate is tested on the trained bundled model (test_export_bundled)."""

from __future__ import annotations

import json
import shutil

import export_helpers as eh
import helpers
import numpy as np
import onnx
import pytest
import torch
from helpers import assert_one_line_error

from zeroseg.checkpoint import load_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.export import OnnxSegmenter
from zeroseg.export.core import parity
from zeroseg.export.core.manifest import read_manifest, sha256_file
from zeroseg.export.core.specs import BATCH, HEIGHT, WIDTH, segmenter_feed
from zeroseg.infer.segmenter import Segmenter
from zeroseg.kernels.reference import segment_head_ref

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # the shared exports: ~100 s

LABELS = "cat,dog|puppy,traffic light"
CLASSES = eh.TINY_CLASSES


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return eh.write_voc(tmp_path_factory.mktemp("calib") / "voc", 6)


@pytest.fixture(scope="module")
def bundle(world, tmp_path_factory):
    """The tiny checkpoint exported with a vocabulary (fp32), once per run; and the export's log."""

    return eh.tiny_bundle(world.checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def images():
    """Square and non-square, odd sizes, several sharing a network input size (batches > 1)."""
    sizes = [(64, 64), (53, 37), (37, 53), (64, 64), (100, 30), (9, 9), (64, 64)]
    return [eh.smooth_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]


def test_bundle_files_and_manifest(bundle, world):
    path, lines = bundle
    names = {p.name for p in path.iterdir()}
    assert names == {
        "image_encoder.onnx",
        "text_encoder.onnx",
        "segmenter.onnx",
        "vocab.npz",
        "manifest.json",
    }
    m = read_manifest(path)
    assert m.version == 1 and m.exporter["dynamo"] is True and m.exporter["opset"] == 20
    assert set(m.versions) >= {"zeroseg", "torch", "onnx", "onnxruntime"}
    assert all(m.versions[k] for k in ("zeroseg", "torch", "onnx", "onnxruntime"))
    assert set(m.files) == names - {"manifest.json"}
    for name, digest in m.files.items():
        assert sha256_file(path / name) == digest
    assert m.source["sha256"] == sha256_file(m.source["checkpoint"])
    assert m.preprocess["short_side"] == helpers.SHORT_SIDE and m.preprocess["patch_multiple"] == 8
    assert m.preprocess["mean"] == list(world.config.preprocess.mean)
    assert m.text["templates"] == helpers.TEMPLATES and m.text["context_length"] == 16
    assert m.model["student"] == world.student_cfg.to_dict() and "train" not in m.model
    assert [c for c in m.vocab["classes"]] == [*CLASSES, ["background"]]
    assert any("parity (fp32" in line for line in lines) and m.int8 is None


def test_graphs_carry_the_io_names_and_dynamic_dims(bundle):
    path, _ = bundle
    m = read_manifest(path)
    for name, entry in m.graphs.items():
        model = onnx.load(str(path / entry["file"]))
        onnx.checker.check_model(model, full_check=True)
        for values, specs in ((model.graph.input, entry["inputs"]), (model.graph.output, entry["outputs"])):
            assert [v.name for v in values] == [s["name"] for s in specs], name
            for value, spec in zip(values, specs, strict=True):
                dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                assert dims == spec["dims"], (name, value.name)
    assert m.graphs["image_encoder"]["inputs"][0]["dims"] == [BATCH, 3, HEIGHT, WIDTH]
    assert m.graphs["text_encoder"]["inputs"][0]["dtype"] == "int64"
    assert m.graphs["segmenter"]["outputs"][0]["dtype"] == "int32"
    # no int64 ArgMax (ONNX Runtime's CPU ArgMax has no int64 kernel)
    text = onnx.shape_inference.infer_shapes(onnx.load(str(path / "text_encoder.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in [*text.graph.value_info, *text.graph.input]}
    argmax_inputs = [n.input[0] for n in text.graph.node if n.op_type == "ArgMax"]
    assert argmax_inputs and all(types.get(i) == onnx.TensorProto.FLOAT for i in argmax_inputs)


def test_parity_figures_pass_the_gates(bundle):
    m = read_manifest(bundle[0])
    p = m.parity
    assert p["images"] >= 8 and {c["batch"] for c in p["cases"]} >= {1, 3}
    assert any(c["input_hw"] == [8, 8] for c in p["cases"])  # one patch
    assert any(c["input_hw"][0] != c["input_hw"][1] for c in p["cases"])
    assert p["segmenter"]["pixel_agreement"] >= parity.FP32_AGREEMENT
    assert p["image_encoder"]["embeddings_max_abs_error"] < 1e-4
    assert p["text_encoder"]["max_abs_error"] < parity.TEXT_MAX_ERROR


@pytest.mark.parametrize("classes", [1, 200])
@pytest.mark.parametrize("batch,hw", [(1, (64, 64)), (3, (40, 72))])
def test_segmenter_graph_equals_the_reference_head(bundle, world, classes, batch, hw):
    """segmenter.onnx for 1 and 200 classes, batch 1 and 3, square and non-square, vs PyTorch."""
    from zeroseg.export.graphs import ImageEncoderGraph
    from zeroseg.export.onnx.runtime import open_session

    path, _ = bundle
    ckpt = load_checkpoint(world.checkpoint)
    encoder = ImageEncoderGraph(ckpt.build_student(), ckpt.preprocess)
    gen = torch.Generator().manual_seed(classes + batch)
    pixels = torch.rand(batch, 3, *hw, generator=gen)
    text = torch.nn.functional.normalize(
        torch.randn(classes, ckpt.student_config.out_dim, generator=gen), dim=-1
    )
    session = open_session(path / "segmenter.onnx", threads=1)
    out_size = (hw[0] + 13, hw[1] * 2 - 1)
    labels, seg_labels, probs = session.run(
        None, segmenter_feed(pixels.numpy(), text.numpy(), 0.02, 1, out_size)
    )
    with torch.no_grad():
        segments, maps = encoder(pixels)
        want = segment_head_ref(segments, text, ckpt.logit_scale, maps, out_size, 0.02, label_offset=1)
    assert labels.shape == (batch, *out_size) and labels.dtype == np.int32
    assert (labels == want.labels.numpy()).mean() >= 0.999
    assert np.array_equal(seg_labels, (want.index + 1).numpy())
    assert np.abs(probs - want.prob.numpy()).max() < 1e-4


def test_onnx_segmenter_equals_segmenter(bundle, world, images):
    seg = Segmenter(world.checkpoint)
    ort_seg = OnnxSegmenter(bundle[0], threads=1)
    for kwargs in ({}, {"bg_thresh": 0.01}, {"bg_prompt": True, "bg_thresh": 0.2}, {"background": False}):
        want = seg(images, CLASSES, batch_size=3, **kwargs)
        got = ort_seg(images, CLASSES, batch_size=3, **kwargs)
        for a, b in zip(want, got, strict=True):
            assert b.labels.shape == a.labels.shape and b.labels.dtype == np.int32
            assert (a.labels == b.labels).mean() >= 0.999, kwargs
            assert b.class_names == a.class_names
            assert np.array_equal(a.segment_labels, b.segment_labels)
            np.testing.assert_allclose(b.segment_probs, a.segment_probs, atol=1e-4)
            assert set(b.fractions()) == set(a.fractions())
    # new classes (not in vocab.npz) go through text_encoder.onnx with torch installed
    want = seg(images[:2], ["zebra", "sofa|couch"], bg_thresh=0.01)
    got = ort_seg(images[:2], ["zebra", "sofa|couch"], bg_thresh=0.01)
    for a, b in zip(want, got, strict=True):
        assert (a.labels == b.labels).mean() >= 0.999
    emb = ort_seg.embed_prompts([("zebra",), ("sofa", "couch")])
    np.testing.assert_allclose(emb, seg.embed_prompts([("zebra",), ("sofa", "couch")]).numpy(), atol=1e-5)


def test_text_graph_keeps_the_causal_mask(bundle, world):
    from zeroseg.export.onnx.runtime import open_session

    encoder = load_checkpoint(world.checkpoint).build_text_encoder()
    tokens = encoder.tokenize(["a photo of a cat.", "dog"]).numpy()
    session = open_session(bundle[0] / "text_encoder.onnx", threads=1)
    base = session.run(None, {"token_ids": tokens})[0]
    with torch.no_grad():
        want = torch.nn.functional.normalize(encoder(torch.from_numpy(tokens)).float(), dim=-1).numpy()
    assert np.abs(base - want).max() < 1e-5
    eot = tokens.argmax(axis=1)
    changed = tokens.copy()
    changed[0, eot[0] + 1 :] = 400  # after end-of-text: a causal mask makes these invisible
    assert np.abs(session.run(None, {"token_ids": changed})[0][0] - base[0]).max() < 1e-6


def test_runs_without_torch(bundle, world, images, tmp_path):
    paths = []
    for i, img in enumerate(images[:4]):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    want = Segmenter(world.checkpoint)([eh.smooth_image(1, 1, 0)] * 0 + images[:4], CLASSES, bg_thresh=0.01)
    np.savez(tmp_path / "want.npz", *[r.labels for r in want])
    code = """
    import sys
    import numpy as np
    from zeroseg.errors import ZerosegError
    import zeroseg
    from zeroseg.export import OnnxSegmenter
    seg = zeroseg.load(sys.argv[1], threads=1)  # the one way in, torch-free for an ONNX bundle
    assert type(seg) is OnnxSegmenter, type(seg)
    got = seg(sys.argv[3:], [["cat"], ["dog", "puppy"], ["traffic light"]], bg_thresh=0.01)
    want = np.load(sys.argv[2])
    agree = [float((g.labels == want[f"arr_{i}"]).mean()) for i, g in enumerate(got)]
    assert min(agree) >= 0.999, agree
    assert not any(m.split(".")[0] in ("torch", "open_clip") for m in sys.modules), "torch was imported"
    try:
        seg(sys.argv[3:4], ["zebra"])
    except ZerosegError as exc:
        print("refused:", exc)
    print("ok", min(agree))
    """
    result = eh.run_without_torch(code, str(bundle[0]), str(tmp_path / "want.npz"), *map(str, paths))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    refusal = next(line for line in result.stdout.splitlines() if line.startswith("refused:"))
    assert "zebra" in refusal and "vocab.npz" in refusal and "torch" in refusal


def test_segment_and_eval_cli_with_engine(bundle, world, calib, cli, tmp_path):
    img = tmp_path / "a.png"
    eh.smooth_image(53, 37, 3).save(img)
    res = cli("segment", "--engine", bundle[0], img, "--labels", LABELS, "--out", tmp_path / "out")
    assert res.code == 0, res.err
    labels_png = tmp_path / "out" / "a_labels.png"
    meta = json.loads((tmp_path / "out" / "a.json").read_text())
    assert labels_png.is_file() and meta["engine"] == str(bundle[0]) and meta["precision"] == "fp32"
    res = cli("eval", "--engine", bundle[0], "--dataset", calib, "-q")
    assert res.code == 0, res.err
    miou_engine = eh.parse_miou(res.out)
    res = cli("eval", world.checkpoint, "--dataset", calib, "-q")
    assert res.code == 0, res.err
    assert miou_engine == pytest.approx(eh.parse_miou(res.out), abs=2e-3)
    res = cli("eval", "--engine", bundle[0], "--dataset", calib, "--precision", "int8", "-q")
    assert_one_line_error(res, "--int8")
    res = cli("eval", world.checkpoint, "--engine", bundle[0], "--dataset", calib, "-q")
    assert_one_line_error(res, "either")


def _bad_bundles(src, tmp_path):
    def graph_bytes(p):
        data = bytearray((p / "segmenter.onnx").read_bytes())
        data[-10] ^= 0xFF
        (p / "segmenter.onnx").write_bytes(bytes(data))

    out = {}
    out["edited manifest"] = eh.copy_bundle(src, tmp_path / "edited")
    eh.edit_manifest(out["edited manifest"], lambda d: d["preprocess"].update(short_side=128), resign=False)
    out["edited graph"] = eh.copy_bundle(src, tmp_path / "graph")
    graph_bytes(out["edited graph"])
    out["newer format"] = eh.copy_bundle(src, tmp_path / "newer")
    eh.edit_manifest(out["newer format"], lambda d: d.update(version=99), resign=True)
    return out


@pytest.mark.parametrize(
    "kind,fragment", [("edited manifest", "edited"), ("edited graph", "sha256"), ("newer format", "newer")]
)
def test_tampered_bundles_are_refused(bundle, tmp_path, cli, kind, fragment):
    bad = _bad_bundles(bundle[0], tmp_path)[kind]
    with pytest.raises(ZerosegError, match=fragment):
        OnnxSegmenter(bad)
    img = tmp_path / "a.png"
    eh.smooth_image(20, 30, 0).save(img)
    res = cli("segment", "--engine", bad, img, "--labels", LABELS, "--out", tmp_path / "seg")
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "seg").exists() or not any((tmp_path / "seg").iterdir())


def test_missing_int8_and_unknown_precision(bundle):
    with pytest.raises(ZerosegError, match="precision"):
        OnnxSegmenter(bundle[0], precision="fp16")
    with pytest.raises(ZerosegError, match="--int8"):
        OnnxSegmenter(bundle[0], precision="int8")


# ---- the exporter's refusals (no export runs: they come first) ---------------------------------


def _refused(export_cli, tmp_path, *args, fragments=()):
    res = export_cli("onnx", *args)
    assert_one_line_error(res, *fragments)
    assert eh.leftovers(tmp_path) == []
    return res


def test_export_refuses_bad_checkpoints(world, tmp_path, export_cli):
    out = tmp_path / "b"
    _refused(export_cli, tmp_path, tmp_path / "nope.pt", "--out", out, fragments=("not found",))
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(world.checkpoint.read_bytes()[:5000])
    _refused(export_cli, tmp_path, truncated, "--out", out, fragments=("truncated",))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _refused(export_cli, tmp_path, foreign, "--out", out, fragments=("zeroseg",))
    assert not out.exists()


def test_export_refuses_bad_options(world, tmp_path, export_cli):
    ck, out = world.checkpoint, tmp_path / "b"
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    _refused(export_cli, tmp_path, ck, "--out", existing, fragments=("--force",))
    assert (existing / "keep.txt").read_text() == "x"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _refused(export_cli, tmp_path, ck, "--out", a_file / "b", fragments=("not a folder",))
    res = export_cli("onnx", ck, "--out", "/proc/zeroseg-no-bundle")
    assert_one_line_error(res, "bundle")
    _refused(export_cli, tmp_path, ck, "--out", out, "--short-side", "30", fragments=("multiple",))
    for side in ("0", "-8"):
        _refused(export_cli, tmp_path, ck, "--out", out, "--short-side", side, fragments=("positive",))
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(export_cli, tmp_path, ck, "--out", out, "--int8", "static", "--calib", empty,
             fragments=("no images",))  # fmt: skip
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("not an image")
    _refused(export_cli, tmp_path, ck, "--out", out, "--int8", "static", "--calib", texts,
             fragments=("no images",))  # fmt: skip
    _refused(export_cli, tmp_path, ck, "--out", out, "--calib", texts, fragments=("--int8",))
    _refused(export_cli, tmp_path, ck, "--out", out, "--int8", "fp8", fragments=("dynamic",))
    _refused(export_cli, tmp_path, ck, "--out", out, "--opset", "12", fragments=("opset",))
    _refused(export_cli, tmp_path, ck, "--out", out, "--tolerance", "2", fragments=("tolerance",))
    assert not out.exists()


# ---- the gate and --force, on the graphs of the bundle (no new export) -----------------------


@pytest.fixture
def reuse_graphs(bundle, monkeypatch):
    """Make export_onnx copy the module bundle's fp32 graphs instead of exporting them again."""
    from zeroseg.export.onnx import bundle as bundle_module

    src = bundle[0]
    graphs = read_manifest(src).graphs

    def copy_graphs(ckpt, modules, folder, **kwargs):
        entries = {}
        for name, entry in graphs.items():
            shutil.copy(src / entry["file"], folder / entry["file"])
            entries[name] = {k: v for k, v in entry.items() if k != "int8_file"}
        return entries

    monkeypatch.setattr(bundle_module, "export_graphs", copy_graphs)


def test_failed_gate_leaves_nothing(world, tmp_path, monkeypatch, reuse_graphs):
    real = parity.image_parity

    def worse(*args, **kwargs):
        figures, labels = real(*args, **kwargs)
        figures["segmenter"]["pixel_agreement"] = 0.99
        return figures, labels

    monkeypatch.setattr(parity, "image_parity", worse)
    out = tmp_path / "b"
    with pytest.raises(ZerosegError) as exc:
        eh.export(world.checkpoint, out, threads=1)
    assert "segmenter.onnx" in str(exc.value) and "99.0000%" in str(exc.value) and "\n" not in str(exc.value)
    assert not out.exists() and eh.leftovers(tmp_path) == []
    eh.export(world.checkpoint, out, threads=1, tolerance=0.98)  # the threshold is changed, loudly
    assert read_manifest(out).parity["threshold"] == 0.98


def test_tolerance_is_stated_and_force_replaces(world, tmp_path, reuse_graphs):
    out = tmp_path / "b"
    _, lines = eh.export(world.checkpoint, out, threads=1, tolerance=0.995)
    assert any("set by --tolerance" in line and "99.50%" in line for line in lines)
    assert read_manifest(out).vocab is None and not (out / "vocab.npz").exists()
    (out / "stale.txt").write_text("old")
    with pytest.raises(ZerosegError, match="--force"):
        eh.export(world.checkpoint, out, threads=1)
    eh.export(world.checkpoint, out, threads=1, force=True, labels=[["cat"]])
    assert not (out / "stale.txt").exists() and (out / "vocab.npz").exists()
    assert eh.leftovers(tmp_path) == []


def test_int8_gate_refuses_a_random_model(world, tmp_path, reuse_graphs):
    """Quantisation noise flips the near-tie groupings of random weights: the looser gate still holds."""
    out = tmp_path / "b"
    with pytest.raises(ZerosegError) as exc:
        eh.export(world.checkpoint, out, threads=1, int8="dynamic", labels=CLASSES)
    message = str(exc.value)
    assert "segmenter.int8.onnx (dynamic)" in message and "98.00%" in message and "\n" not in message
    assert not out.exists() and eh.leftovers(tmp_path) == []
