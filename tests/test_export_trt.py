"""zeroseg-export trt: everything before the TensorRT builder call on the CPU; the build and the engine
run carry the `tensorrt` marker and skip without TensorRT and a CUDA GPU. No TensorRT mock anywhere.

One module fixture exports a micro checkpoint through `zeroseg-export trt --onnx-only` (the bundle
export inside takes most of the ~1 min); the precision-graph tests reuse its image encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import helpers
import numpy as np
import onnx
import pytest
import torch
from helpers import assert_one_line_error
from tiny_clip import tiny_clip

from zeroseg.errors import ZerosegError
from zeroseg.export.onnx.runtime import open_session
from zeroseg.export.tensorrt import precision as tp
from zeroseg.export.tensorrt.manifest import (
    ENGINE_JSON,
    check_compatible,
    read_engine_json,
    write_engine_json,
)
from zeroseg.export.tensorrt.profiles import Profile, check_input, default_shapes, derive_profile, parse_shape

pytestmark = pytest.mark.slow  # the micro export and its TensorRT graphs: ~60 s

PATCH, NATIVE, SHORT = 8, 4, 48  # micro model: 32 px training size -> 4x4 pos-embed grid


def _tensorrt_skip() -> str | None:
    from zeroseg.export.tensorrt.build import tensorrt_unavailable

    return tensorrt_unavailable()


needs_trt = pytest.mark.skipif(_tensorrt_skip() is not None, reason=str(_tensorrt_skip()))


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """A random micro checkpoint (1 ViT block, 1 grouping stage of 4, 32 px) with a tiny text tower."""
    from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
    from zeroseg.model.config import student_preset
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.preprocess import Preprocess
    from zeroseg.teacher.load import load_teacher, save_teacher

    root = tmp_path_factory.mktemp("trt_micro")
    text_cfg = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    save_teacher(root / "teacher.pt", tiny_clip(seed=0, text_cfg=text_cfg), name="tiny")
    teacher = load_teacher(str(root / "teacher.pt"))
    torch.manual_seed(0)
    cfg = student_preset(
        "shapeworld", image_size=32, patch_size=PATCH, embed_dim=32, depth=1, num_heads=2, seg_dim=32,
        seg_heads=2, seg_depth=1, group_after=(1,), num_groups=(4,), decoder_dim=32, decoder_depth=1,
        decoder_heads=2, out_dim=teacher.embed_dim,
    )  # fmt: skip
    config = CheckpointConfig(
        student=cfg, preprocess=Preprocess(train_size=32, test_short_side=SHORT), templates=("a {}.",),
        logit_scale=teacher.logit_scale, teacher={"name": "tiny"},
    )  # fmt: skip
    save_checkpoint(
        root / "ckpt.pt", config=config, student=ZeroSegStudent(cfg).state_dict(), text=teacher.text_state()
    )
    return root / "ckpt.pt"


@pytest.fixture(scope="module")
def graph_only(micro, tmp_path_factory) -> tuple[Path, list[str]]:
    """`export_trt --onnx-only` of the micro checkpoint (fp32): the folder and its log lines."""
    from zeroseg.export.tensorrt.export import TrtSettings, export_trt

    out = tmp_path_factory.mktemp("trt_out") / "engine"
    lines: list[str] = []
    with helpers.torch_threads(2):
        export_trt(TrtSettings(source=micro, out=out, onnx_only=True, progress=False), log=lines.append)
    return out, lines


@pytest.fixture(scope="module")
def encoder(graph_only):
    """The micro bundle's fp32 image encoder (antialiased pos-embed resize) and its PyTorch wrapper."""
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.export.graphs import ImageEncoderGraph

    folder, _ = graph_only
    meta = json.loads((folder / "onnx" / "manifest.json").read_text())
    ckpt = load_checkpoint(meta["source"]["checkpoint"], with_train_state=False)
    module = ImageEncoderGraph(ckpt.build_student("cpu"), ckpt.preprocess).eval()
    return folder / "onnx" / "image_encoder.onnx", module


# ---- the TensorRT-parseable pos-embed path ------------------------------------------------------


def test_rewrite_removes_antialias_and_still_matches_pytorch(encoder, tmp_path):
    path, module = encoder
    model = onnx.load(str(path))
    assert len(tp.antialiased_resizes(model)) == 1  # the default export is unchanged (timm's antialias)
    assert tp.make_parseable(model) == tp.antialiased_resizes(onnx.load(str(path)))
    assert tp.antialiased_resizes(model) == []
    onnx.save(model, str(tmp_path / "trt.onnx"))
    session = open_session(tmp_path / "trt.onnx", threads=1)
    gen = torch.Generator().manual_seed(3)
    for hw in [(32, 32), (48, 64), (40, 96), (88, 48)]:  # grid == native, and up-sampled, non-square
        pixels = torch.rand(2, 3, *hw, generator=gen)
        with torch.no_grad():
            want_seg, want_maps = module(pixels)
        got_seg, got_maps = session.run(None, {"pixels": pixels.numpy()})
        assert np.abs(got_seg - want_seg.numpy()).max() < 1e-5, hw
        assert np.array_equal(got_maps, want_maps.numpy()), hw


def test_rewrite_differs_below_the_native_grid_so_profiles_refuse_it(encoder):
    path, _ = encoder
    model = onnx.load(str(path))
    assert tp.pos_embed_error(model, 32, 48) < 1e-6  # same computation, float rounding only
    assert tp.pos_embed_error(model, 64, 40) < 1e-6
    assert tp.pos_embed_error(model, 16, 32) > 1e-3  # a 2x4 grid: the filter would be stretched
    with pytest.raises(ZerosegError, match=r"below the model's 4x4 position-embedding grid.*max error"):
        derive_profile(patch=PATCH, native_grid=NATIVE, short_side=SHORT, max_side=256, min_shape=(1, 16, 32),
                       pos_embed_error=lambda h, w: tp.pos_embed_error(model, h, w))  # fmt: skip


# ---- precision graphs, measured in ONNX Runtime ---------------------------------------------------


def _cases_and_text():
    from zeroseg.export.tensorrt.export import parity_cases

    profile = derive_profile(patch=PATCH, native_grid=NATIVE, short_side=SHORT, max_side=256)
    gen = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, 64, generator=gen), dim=-1)
    return parity_cases(SHORT, PATCH, profile), text


def _parity(reference: Path, graph: Path, cases, text) -> dict:
    """precision_parity plus the mean cosine of the segment embeddings (a random micro model has
    near-tied class scores, so its label agreement is printed but the embeddings are asserted)."""
    ref, got = open_session(reference, threads=1), open_session(graph, threads=1)
    fig = tp.precision_parity(ref, got, cases, text, logit_scale=10.0, bg_thresh=0.3, label_offset=1)
    a = np.concatenate([ref.run(None, {"pixels": c.pixels})[0].reshape(-1, 64) for c in cases])
    b = np.concatenate([got.run(None, {"pixels": c.pixels})[0].reshape(-1, 64) for c in cases])
    fig["cosine"] = float(np.mean(np.sum(a * b, axis=1)))  # both unit norm
    return fig


def test_fp16_graph_keeps_the_block_list_in_fp32_and_agrees(encoder, tmp_path):
    path, _ = encoder
    model = onnx.load(str(path))
    tp.make_parseable(model)
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    half = tp.fp16_graph(model)
    onnx.save(half, str(tmp_path / "fp16.onnx"))
    f16 = onnx.TensorProto.FLOAT16
    assert any(i.data_type == f16 for i in half.graph.initializer)  # the body went to fp16
    inferred = onnx.shape_inference.infer_shapes(half)
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    for node in half.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceL2", "Resize", "ArgMax"):
            assert types.get(node.input[0]) == onnx.TensorProto.FLOAT, (node.op_type, node.name)
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [onnx.TensorProto.FLOAT]
    cases, text = _cases_and_text()
    fig = _parity(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx", cases, text)
    print(f"micro fp16 vs fp32: {fig['pixel_agreement']:.4%}, cosine {fig['cosine']:.5f}")
    assert 0 < fig["embeddings_max_abs_error"] < 0.05 and fig["cosine"] > 0.999


def test_int8_graph_is_symmetric_qdq_outside_the_head(encoder, tmp_path):
    path, _ = encoder
    model = onnx.load(str(path))
    tp.make_parseable(model)
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    cases, text = _cases_and_text()
    feeds = [{"pixels": c.pixels} for c in cases]
    n = tp.int8_graph(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", feeds)
    q = onnx.load(str(tmp_path / "int8.onnx"))
    count, bad = tp.qdq_zero_points(q)
    assert n > 0 and count > 0 and bad == 0  # TensorRT: signed int8, zero point 0
    head = set(tp.head_nodes(model))
    dq_fed = {o for nd in q.graph.node if nd.op_type == "DequantizeLinear" for o in nd.output}
    for nd in q.graph.node:
        if nd.name in head and nd.op_type in ("MatMul", "Gemm"):
            assert not set(nd.input) & dq_fed, nd.name  # the head stays float
    assert tp.antialiased_resizes(q) == []
    fig = _parity(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", cases, text)
    print(f"micro int8 vs fp32: {fig['pixel_agreement']:.4%}, cosine {fig['cosine']:.5f}")
    # measured 0.955 on these random weights; unrelated unit vectors give ~0
    assert fig["embeddings_max_abs_error"] > 0 and fig["cosine"] > 0.9


def test_foreign_antialiased_resize_is_refused():
    node = onnx.helper.make_node("Resize", ["x", "", "", "s"], ["y"], name="aa", mode="linear", antialias=1)
    graph = onnx.helper.make_graph([node], "g", [], [])
    with pytest.raises(ZerosegError, match="no TensorRT equivalent"):
        tp.make_parseable(onnx.helper.make_model(graph))


# ---- profiles --------------------------------------------------------------------------------------


def test_default_profile_from_the_manifest():
    assert default_shapes(256, 2048, 8) == ((1, 256, 256), (1, 256, 344), (8, 512, 512))
    p = derive_profile(patch=8, native_grid=16, short_side=256, max_side=384)
    assert p.max == (8, 384, 384) and p.opt == (1, 256, 344)
    assert p.to_dict() == {"input": "pixels", "min": [1, 3, 256, 256], "opt": [1, 3, 256, 344],
                           "max": [8, 3, 384, 384]}  # fmt: skip
    assert Profile.from_dict(p.to_dict()) == p
    assert p.trtexec_shapes()[0] == "--minShapes=pixels:1x3x256x256"


@pytest.mark.parametrize(
    "shapes, fragment",
    [
        (
            {"min_shape": (2, 256, 256), "opt_shape": (1, 256, 256)},
            "out of order: --min-shape B=2 > --opt-shape B=1",
        ),
        ({"opt_shape": (1, 256, 600), "max_shape": (8, 512, 512)}, "--opt-shape W=600 > --max-shape W=512"),
        ({"min_shape": (1, 250, 256)}, "multiples of the patch size 8"),
        ({"max_shape": (8, 4096, 4096)}, "exceeds the bundle's max side 2048"),
        ({"min_shape": (1, 64, 256)}, "below the model's 16x16 position-embedding grid"),
    ],
)
def test_bad_profiles_are_refused(shapes, fragment):
    with pytest.raises(ZerosegError, match=None) as info:
        derive_profile(patch=8, native_grid=16, short_side=256, max_side=2048, **shapes)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_shape_flags_parse_and_inputs_are_checked():
    assert parse_shape("--min-shape", "1,256,344") == (1, 256, 344) == parse_shape("--min-shape", "1x256x344")
    for bad in ("1,256", "a,b,c", "0,256,256"):
        with pytest.raises(ZerosegError, match="--min-shape"):
            parse_shape("--min-shape", bad)
    p = Profile((1, 256, 256), (1, 256, 344), (4, 512, 512))
    check_input(p, (4, 3, 512, 256))
    with pytest.raises(
        ZerosegError, match=r"input 1x3x128x256 is outside the engine's profile \(min 1x3x256x256"
    ):
        check_input(p, (1, 3, 128, 256))
    with pytest.raises(ZerosegError, match="outside"):
        check_input(p, (5, 3, 256, 256))


# ---- engine.json and the refusal logic ----------------------------------------------------------------


def _engine_folder(tmp_path: Path, **tensorrt) -> tuple[Path, dict]:
    """An engine.json as the builder writes it, next to a stand-in plan file (bytes, not TensorRT)."""
    from zeroseg.export.core.manifest import sha256_file

    folder = tmp_path / "eng"
    folder.mkdir()
    (folder / "image_encoder.engine").write_bytes(b"plan bytes stand-in")
    graph = folder / "image_encoder.fp32.onnx"
    graph.write_bytes(b"graph")
    meta = {
        "precision": "fp32", "profiles": [Profile((1, 256, 256), (1, 256, 344), (8, 512, 512)).to_dict()],
        "tensorrt": {"version": "11.4.0.106", "hardware_compatibility": "none", "version_compatible": False,
                     **tensorrt},
        "device": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
        "engine": {"file": "image_encoder.engine", "sha256": sha256_file(folder / "image_encoder.engine")},
        "graph": {"file": "image_encoder.fp32.onnx", "sha256": sha256_file(graph)},
    }  # fmt: skip
    write_engine_json(folder, meta)
    return folder, read_engine_json(folder)


def test_engine_json_checksums_refuse_edits(tmp_path):
    folder, meta = _engine_folder(tmp_path)
    assert meta["precision"] == "fp32" and meta["format"] == "zeroseg-trt-engine"
    (folder / "image_encoder.engine").write_bytes(b"another plan")
    with pytest.raises(ZerosegError, match="image_encoder.engine does not match its sha256"):
        read_engine_json(folder)
    data = json.loads((folder / ENGINE_JSON).read_text())
    data["precision"] = "int8"
    (folder / ENGINE_JSON).write_text(json.dumps(data))
    with pytest.raises(ZerosegError, match="edited after the build"):
        read_engine_json(folder)
    with pytest.raises(ZerosegError, match="not a zeroseg engine folder"):
        read_engine_json(tmp_path)


def test_compatibility_rules(tmp_path):
    _, meta = _engine_folder(tmp_path)
    h100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)}
    check_compatible(meta, tensorrt="11.4.0.106", **h100)
    with pytest.raises(
        ZerosegError, match=r"built with TensorRT 11.4.0.106 but TensorRT 11.5.0.63 is installed"
    ):
        check_compatible(meta, tensorrt="11.5.0.63", **h100)
    with pytest.raises(
        ZerosegError, match=r"built for NVIDIA H100 80GB HBM3 \(compute capability 9.0\).*A100"
    ):
        check_compatible(meta, tensorrt="11.4.0.106", gpu="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0))
    vc = {
        **meta,
        "tensorrt": {**meta["tensorrt"], "version_compatible": True, "hardware_compatibility": "ampere+"},
    }
    check_compatible(vc, tensorrt="11.5.0.63", gpu="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0))
    with pytest.raises(ZerosegError, match="version-compatible with TensorRT 11.4.0.106"):
        check_compatible(vc, tensorrt="11.3.0.1", **h100)
    with pytest.raises(ZerosegError, match="Ampere or newer"):
        check_compatible(vc, tensorrt="11.4.0.106", gpu="Tesla T4", compute_capability=(7, 5))


# ---- the command, end to end up to the builder ------------------------------------------------------


def test_onnx_only_folder(graph_only):
    folder, lines = graph_only
    assert sorted(p.name for p in folder.iterdir()) == ["engine.json", "image_encoder.fp32.onnx", "onnx"]
    meta = read_engine_json(folder)
    assert meta["engine"] is None and meta["precision"] == "fp32" and meta["source"]["kind"] == "checkpoint"
    assert meta["profiles"] == [{"input": "pixels", "min": [1, 3, 48, 48], "opt": [1, 3, 48, 64],
                                 "max": [8, 3, 96, 96]}]  # fmt: skip
    assert meta["parity"]["pixel_agreement"] == 1.0 and meta["parity"]["images"] >= 5
    assert tp.antialiased_resizes(onnx.load(str(folder / meta["graph"]["file"]))) == []
    graph_ops = {n.domain for n in onnx.load(str(folder / meta["graph"]["file"])).graph.node}
    assert "com.microsoft" not in graph_ops  # attention unfused for TensorRT's parser; the bundle's is fused
    assert json.loads((folder / "onnx" / "manifest.json").read_text())["graphs"]["image_encoder"]["fused_ops"]
    assert any(line.startswith("parity (fp32 graph vs fp32") for line in lines)
    trtexec = next(line for line in lines if line.startswith("trtexec equivalent"))
    assert "--onnx=image_encoder.fp32.onnx" in trtexec and "--maxShapes=pixels:8x3x96x96" in trtexec
    assert "--fp16" not in trtexec and meta["trtexec"] in trtexec


def test_trt_segmenter_refuses_without_an_engine_or_tensorrt(graph_only, tmp_path):
    from zeroseg.export import TRTSegmenter

    folder, _ = graph_only
    with pytest.raises(ZerosegError, match="written with --onnx-only"):
        TRTSegmenter(folder)
    if _tensorrt_skip() is not None:  # a stand-in plan passes the checksums, then TensorRT is missing
        eng, _ = _engine_folder(tmp_path)
        import shutil

        shutil.copytree(folder / "onnx", eng / "onnx")
        data = json.loads((eng / ENGINE_JSON).read_text())
        data.pop("engine_json_sha256")
        data["bundle"] = "onnx"
        for key in ("format", "version"):
            data.pop(key)
        write_engine_json(eng, data)
        with pytest.raises(ZerosegError, match="TensorRT is not installed") as info:
            TRTSegmenter(eng)
        assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line_errors_and_write_nothing(micro, graph_only, export_cli, tmp_path):
    bare = tmp_path / "model.onnx"
    bare.write_bytes(b"\x08\x07")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(micro.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    no_manifest = tmp_path / "folder"
    no_manifest.mkdir()
    out = tmp_path / "out"
    cases = [
        ((tmp_path / "missing.pt",), ("not found",)),
        ((truncated,), ("trunc.pt",)),
        ((foreign,), ("foreign.pt",)),
        ((bare,), ("bare ONNX file", "bundle folder")),
        ((no_manifest,), ("no manifest.json",)),
        ((micro, "--min-shape", "2,48,48", "--opt-shape", "1,48,48"), ("out of order",)),
        ((micro, "--max-shape", "8,100,96"), ("multiples of the patch size 8",)),
        ((micro, "--min-shape", "1,16,48"), ("position-embedding grid",)),
        ((micro, "--precision", "bf16"), ("--precision must be one of fp32, fp16, int8",)),
        ((micro, "--hardware-compat", "hopper"), ("--hardware-compat",)),
        ((micro, "--calib", tmp_path), ("--calib is for --precision int8",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(export_cli("trt", args[0], "--out", out, *args[1:]), *fragments)
    existing, _ = graph_only
    assert_one_line_error(export_cli("trt", micro, "--out", existing), "already exists", "--force")
    if _tensorrt_skip() is not None:
        assert_one_line_error(
            export_cli("trt", micro, "--out", out), "TensorRT is not installed", "nothing was written"
        )
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


# ---- on a machine with TensorRT 11 and a GPU ----------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_trt
def test_build_and_run_engine(micro, tmp_path):  # pragma: no cover - needs TensorRT and CUDA
    from zeroseg.export import TRTSegmenter
    from zeroseg.export.tensorrt.export import TrtSettings, export_trt
    from zeroseg.infer.segmenter import Segmenter

    out, cache = tmp_path / "engine", tmp_path / "timing.cache"
    meta = export_trt(
        TrtSettings(source=micro, out=out, timing_cache=cache, progress=False), log=lambda _: None
    )
    assert cache.is_file() and meta["tensorrt"]["version"] and meta["device"]["name"]
    seg = TRTSegmenter(out)
    ref = Segmenter.from_checkpoint(micro)
    from PIL import Image

    images = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 60, 3), dtype=np.uint8))
        for i in range(3)
    ]
    got, want = seg(images, ["red", "green"]), ref(images, ["red", "green"])
    agree = np.mean([np.mean(g.labels == w.labels) for g, w in zip(got, want, strict=True)])
    assert agree >= 0.99
    with pytest.raises(ZerosegError, match="outside the engine's profile"):
        seg([Image.new("RGB", (400, 48))], ["red"])
