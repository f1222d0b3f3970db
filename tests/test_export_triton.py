"""`zeroseg-export triton`: the Triton model repository of the tiny bundle (shared with test_export_onnx).

Every config.pbtxt is parsed with Triton's own schema (tritonclient's model_config_pb2: unknown fields and
bad enum values are refused) and checked against the ONNX graph it serves; the repository's files run
through ONNX Runtime with Triton's request shapes and give `OnnxSegmenter`'s labels. No tritonserver here:
the TensorRT side is covered by the config of a `tensorrt_plan` model and by the refusals of a TensorRT
folder that has no engine (what `zeroseg-export trt --onnx-only` writes), never by a pretend engine.
"""

from __future__ import annotations

import base64
import json
import shutil

import export_helpers as eh
import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from helpers import assert_one_line_error
from tritonclient.grpc import model_config_pb2 as mc

from zeroseg.errors import ZerosegError
from zeroseg.export import OnnxSegmenter
from zeroseg.export.core.manifest import load_vocabulary, read_manifest, sha256_file
from zeroseg.export.core.specs import image_encoder_spec, segmenter_feed, segmenter_spec
from zeroseg.export.onnx.runtime import open_session
from zeroseg.export.triton_server.config import (
    PROTO_FIELDS,
    PROTO_RANGES,
    TritonModel,
    config_text,
    plan_batch_size,
    request_arrays,
)
from zeroseg.export.triton_server.repo import TritonSettings, export_triton

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # the tiny bundle export: ~50 s

CLASSES = eh.TINY_CLASSES
#: ONNX element type -> Triton data type (the schema's enum names), independent of the exporter's table
ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64",
                  onnx.TensorProto.INT32: "TYPE_INT32"}  # fmt: skip


@pytest.fixture(scope="module")
def bundle(world, tmp_path_factory):
    """The tiny checkpoint's bundle with a vocabulary: test_export_onnx's, built once per run."""

    return eh.tiny_bundle(world.checkpoint, tmp_path_factory)[0]


@pytest.fixture(scope="module")
def int8_bundle(bundle, tmp_path_factory):
    """The bundle plus a real dynamic-int8 image encoder listed in its (re-signed) manifest."""
    from zeroseg.export.onnx.quantize import quantize_graph

    path = eh.copy_bundle(bundle, tmp_path_factory.mktemp("triton_int8") / "bundle")
    quantize_graph(path / "image_encoder.onnx", path / "image_encoder.int8.onnx", "dynamic")
    digest = sha256_file(path / "image_encoder.int8.onnx")

    def add(data):
        data["graphs"]["image_encoder"]["int8_file"] = "image_encoder.int8.onnx"
        data["files"]["image_encoder.int8.onnx"] = digest

    eh.edit_manifest(path, add, resign=True)
    return path


@pytest.fixture(scope="module")
def repo(int8_bundle, tmp_path_factory):
    """The repository of the int8 bundle with the default options, and the export's log."""
    out = tmp_path_factory.mktemp("triton_repo") / "repo"
    lines: list[str] = []
    data = export_triton(TritonSettings(source=int8_bundle, out=out), log=lines.append)
    return out, data, lines


def parse(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def configs(repo_dir) -> dict[str, mc.ModelConfig]:
    return {p.parent.name: parse(p) for p in sorted(repo_dir.glob("*/config.pbtxt"))}


def graph_shape(tensor) -> list[int]:
    """A config tensor's shape as the graph sees it (its reshape, if any), without the batch dim."""
    return list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)


def emulate_triton(config: mc.ModelConfig, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What Triton hands the backend: each request array checked against the config, then reshaped."""
    names = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.int64): "TYPE_INT64"}
    feed = {}
    for tensor in config.input:
        value = arrays[tensor.name]
        dims = ([-1] if config.max_batch_size > 0 else []) + list(tensor.dims)
        assert value.ndim == len(dims), tensor.name
        assert all(d in (-1, s) for d, s in zip(dims, value.shape, strict=True)), tensor.name
        assert mc.DataType.Name(tensor.data_type) == names[value.dtype], tensor.name
        if tensor.HasField("reshape"):
            value = value.reshape(list(tensor.reshape.shape))
        feed[tensor.name] = value
    return feed


# ---- layout and metadata --------------------------------------------------------------------------


def test_repository_layout_manifest_and_readme(repo, int8_bundle):
    out, data, lines = repo
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    models = ["image_encoder", "image_encoder_int8", "text_encoder", "segmenter"]
    assert files == {
        *(f"{m}/config.pbtxt" for m in models), *(f"{m}/1/model.onnx" for m in models),
        "manifest.json", "vocab.npz", "zeroseg_triton.json", "perf_segmenter.json", "README.md",
    }  # fmt: skip
    assert [d.name for d in out.iterdir() if d.is_dir()] and all(
        d.name in models for d in out.iterdir() if d.is_dir()
    )  # only models are sub-folders: Triton loads each one
    m = read_manifest(out)  # the bundle's own manifest, its checksum intact
    assert (out / "manifest.json").read_bytes() == (int8_bundle / "manifest.json").read_bytes()
    vocab = load_vocabulary(out / "vocab.npz")
    assert [list(e) for e in vocab.entries] == [*CLASSES, ["background"]]
    for name, graph, file in [("image_encoder", "image_encoder", "image_encoder.onnx"),
                              ("image_encoder_int8", "image_encoder", "image_encoder.int8.onnx"),
                              ("text_encoder", "text_encoder", "text_encoder.onnx"),
                              ("segmenter", "segmenter", "segmenter.onnx")]:  # fmt: skip
        assert sha256_file(out / name / "1" / "model.onnx") == m.files[file] == data["models"][name]["sha256"]
        assert data["models"][name]["graph"] == graph
    meta = json.loads((out / "zeroseg_triton.json").read_text())
    assert meta == data and meta["format"] == "zeroseg-triton-repository"
    assert meta["text"]["logit_scale"] == m.text["logit_scale"] and meta["vocab"] == m.vocab
    assert meta["source"]["kind"] == "onnx" and len(meta["pipeline"]) == 3
    readme = (out / "README.md").read_text()
    assert f"tritonserver --model-repository {out.absolute()}" in readme
    for name in models:
        assert f"perf_analyzer -m {name} " in readme
    assert (
        "-b 4 --shape pixels:3,64,88" in readme
        and f"--input-data {out.absolute()}/perf_segmenter.json" in readme
    )
    assert any(line.startswith("wrote ") for line in lines)
    assert eh.leftovers(out.parent) == []


# ---- every config against Triton's schema and the ONNX graph ------------------------------------


def test_every_config_parses_and_matches_its_onnx_graph(repo):
    out, _, _ = repo
    found = configs(out)
    assert set(found) == {"image_encoder", "image_encoder_int8", "text_encoder", "segmenter"}
    for name, cfg in found.items():
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
        [group] = cfg.instance_group
        assert group.kind == mc.ModelInstanceGroup.KIND_CPU and group.count == 1
        graph = onnx.load(str(out / name / "1" / "model.onnx"), load_external_data=False).graph
        batched = cfg.max_batch_size > 0
        assert cfg.HasField("dynamic_batching") == batched, name
        for values, tensors in ((graph.input, cfg.input), (graph.output, cfg.output)):
            assert [v.name for v in values] == [t.name for t in tensors], name
            for value, tensor in zip(values, tensors, strict=True):
                ttype = value.type.tensor_type
                assert mc.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[ttype.elem_type], tensor.name
                dims = list(ttype.shape.dim)
                if batched:  # the batch dimension is implicit, and dynamic in the graph
                    assert dims[0].dim_param, tensor.name
                    dims = dims[1:]
                shape = graph_shape(tensor)
                assert len(shape) == len(dims), (name, tensor.name)
                assert len(tensor.dims) >= 1  # Triton refuses an empty shape
                for dim, want in zip(dims, shape, strict=True):
                    assert want == (-1 if dim.dim_param else dim.dim_value), (name, tensor.name)
    assert found["image_encoder"].max_batch_size == found["image_encoder_int8"].max_batch_size == 8
    assert found["image_encoder"].dynamic_batching.max_queue_delay_microseconds > 0
    # not every tensor of these graphs is batched: Triton must not batch them
    assert found["text_encoder"].max_batch_size == found["segmenter"].max_batch_size == 0
    scalars = {t.name for t in found["segmenter"].input if t.HasField("reshape")}
    assert scalars == {"bg_thresh", "label_offset"}


# ---- the repository's files reproduce the bundle --------------------------------------------------


def test_repository_models_give_the_bundles_labels(repo, bundle):
    out, _, _ = repo
    cfg = configs(out)
    seg = OnnxSegmenter(bundle, threads=1)
    images = [eh.smooth_image(64, 80, seed=s) for s in range(3)]
    want = seg(images, CLASSES)
    space, text = seg.encode_classes(CLASSES, bg_prompt=False)
    vocab, missing = load_vocabulary(out / "vocab.npz").lookup(space.prompts)
    assert not missing and np.array_equal(vocab, text)  # the repository's vocabulary is the bundle's
    pixels = seg.preprocess(images, seg.input_size(64, 80))
    spec = segmenter_spec(0, 0)
    feed = segmenter_feed(pixels, vocab, seg.default_bg_thresh, space.label_offset, (64, 80))
    arrays = request_arrays(spec, feed, batched=False)
    assert arrays["bg_thresh"].shape == (1,) and arrays["output_size"].shape == (2,)
    session = open_session(out / "segmenter" / "1" / "model.onnx", threads=1)
    labels, seg_labels, _ = session.run(None, emulate_triton(cfg["segmenter"], arrays))
    for j, result in enumerate(want):
        assert np.array_equal(labels[j], result.labels)
        assert np.array_equal(seg_labels[j], result.segment_labels)
    # image encoder (batched: the request carries the batch) and its int8 variant
    enc = open_session(out / "image_encoder" / "1" / "model.onnx", threads=1)
    emb, maps = enc.run(None, emulate_triton(cfg["image_encoder"], {"pixels": pixels}))
    want_emb, want_maps = seg.encode(pixels)
    assert np.array_equal(emb, want_emb) and np.array_equal(maps, want_maps)
    q = open_session(out / "image_encoder_int8" / "1" / "model.onnx", threads=1)
    q_emb, _ = q.run(None, {"pixels": pixels})
    assert q_emb.shape == emb.shape and np.abs(q_emb - emb).max() < 1.0


def test_text_encoder_pipeline_reproduces_the_vocabulary(repo):
    """The documented client pipeline: template prompts -> text_encoder -> per-class mean, renormalised."""
    from zeroseg.text import make_tokenizer

    out, data, _ = repo
    text = data["text"]
    tok = make_tokenizer(text["tokenizer"], text["context_length"], text.get("token_subset"))
    templates = text["templates"]
    prompts = [[t.format(n) for n in names for t in templates] for names in CLASSES]
    session = open_session(out / "text_encoder" / "1" / "model.onnx", threads=1)
    rows = []
    for strings in prompts:
        feats = session.run(None, {"token_ids": tok(strings).numpy().astype(np.int64)})[0]
        mean = feats.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    vocab = load_vocabulary(out / "vocab.npz").embeddings[: len(CLASSES)]
    np.testing.assert_allclose(np.stack(rows), vocab, atol=1e-5)


def test_perf_analyzer_request_runs(repo):
    out, _, _ = repo
    cfg = configs(out)["segmenter"]
    data = json.loads((out / "perf_segmenter.json").read_text())
    [request] = data["data"]
    assert set(request) == {t.name for t in cfg.input}
    dtypes = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}
    arrays = {}
    for t in cfg.input:
        entry = request[t.name]
        raw = base64.b64decode(entry["content"]["b64"])
        arrays[t.name] = np.frombuffer(raw, dtype=dtypes[mc.DataType.Name(t.data_type)]).reshape(
            entry["shape"]
        )
    # the request tritonclient builds from these arrays (the README's client): datatypes as in the config
    import tritonclient.grpc as grpc
    from tritonclient.utils import np_to_triton_dtype

    for t in cfg.input:
        request_input = grpc.InferInput(
            t.name, list(arrays[t.name].shape), np_to_triton_dtype(arrays[t.name].dtype)
        )
        request_input.set_data_from_numpy(arrays[t.name])
        assert "TYPE_" + request_input.datatype() == mc.DataType.Name(t.data_type)
    session = open_session(out / "segmenter" / "1" / "model.onnx", threads=1)
    labels, _, probs = session.run(None, emulate_triton(cfg, arrays))
    h, w = arrays["output_size"].tolist()
    assert labels.shape == (1, h, w) and arrays["pixels"].shape == (1, 3, h, w)
    assert labels.max() <= len(CLASSES) and np.isfinite(probs).all()


# ---- options --------------------------------------------------------------------------------------


def test_no_batching_and_gpu_instances(bundle, tmp_path, export_cli):
    out = tmp_path / "repo"
    result = export_cli(
        "triton", bundle, "--out", out, "--max-batch", "0", "--kind", "GPU", "--instances", "3"
    )
    assert result.code == 0, result.err
    found = configs(out)
    assert set(found) == {"image_encoder", "text_encoder", "segmenter"}  # no int8 graphs in this bundle
    for cfg in found.values():
        assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
        [group] = cfg.instance_group
        assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 3
    assert list(found["image_encoder"].input[0].dims) == [-1, 3, -1, -1]
    assert "-m image_encoder --shape pixels:1,3,64,88" in (out / "README.md").read_text()


def test_int8_models_stay_on_the_cpu(int8_bundle, tmp_path):
    lines: list[str] = []
    export_triton(TritonSettings(int8_bundle, tmp_path / "r", max_batch=2, kind="gpu"), log=lines.append)
    found = configs(tmp_path / "r")
    assert found["image_encoder_int8"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert found["image_encoder"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert found["image_encoder"].max_batch_size == 2 and any("CPU kernels" in line for line in lines)


def test_tensorrt_plan_config_parses():
    spec = image_encoder_spec(8, 64)
    cfg = text_format.Parse(
        config_text(TritonModel("image_encoder", spec, "plan", 4, "gpu", 2)), mc.ModelConfig()
    )
    assert cfg.platform == "tensorrt_plan" and cfg.backend == "tensorrt" and cfg.max_batch_size == 4
    assert [list(t.dims) for t in cfg.input] == [[3, -1, -1]]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("segment_embeddings", [8, 64]),
                                                             ("assignment", [8, -1, -1])]  # fmt: skip
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and cfg.HasField("dynamic_batching")
    with pytest.raises(ZerosegError, match="GPU only"):
        config_text(TritonModel("image_encoder", spec, "plan", 4, "cpu", 1))
    engine = {
        "profiles": [
            {"input": "pixels", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 88], "max": [8, 3, 128, 128]}
        ]
    }
    assert [plan_batch_size(engine, spec, b) for b in (None, 3, 0)] == [8, 3, 0]
    with pytest.raises(ZerosegError, match=r"exceeds the engine's profile \(batch 1..8\)"):
        plan_batch_size(engine, spec, 16)
    engine["profiles"][0]["min"][0] = 2
    with pytest.raises(ZerosegError, match="--min-shape 1,H,W"):
        plan_batch_size(engine, spec, 4)
    assert plan_batch_size(engine, spec, 0) == 0


def test_every_number_written_is_checked_against_tritons_schema():
    """PROTO_FIELDS names each numeric field config_text writes with its type in model_config.proto;
    a value at the edge of its type is written and parses, one past it is refused in one line."""
    from google.protobuf.descriptor import FieldDescriptor as F

    types = {F.TYPE_INT32: "int32", F.TYPE_UINT32: "uint32", F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64"}
    for message, field, kind, _ in PROTO_FIELDS.values():
        assert types[getattr(mc, message).DESCRIPTOR.fields_by_name[field].type] == kind, (message, field)
    spec = image_encoder_spec(8, 64)
    top = PROTO_RANGES["int32"][1]
    cfg = text_format.Parse(config_text(TritonModel("m", spec, "onnx", top, "cpu", top)), mc.ModelConfig())
    assert cfg.max_batch_size == top and cfg.instance_group[0].count == top
    for batch, instances, option in ((top + 1, 1, "--max-batch"), (1, top + 1, "--instances")):
        with pytest.raises(ZerosegError, match=f"^{option} {top + 1} is outside Triton's range .*int32"):
            config_text(TritonModel("m", spec, "onnx", batch, "cpu", instances))
    delay = PROTO_RANGES["uint64"][1] + 1
    with pytest.raises(ZerosegError, match="max_queue_delay_microseconds"):
        config_text(TritonModel("m", spec, "onnx", 4, "cpu", 1, queue_delay_us=delay))


@pytest.fixture
def engine_folder_without_engine(bundle, tmp_path):
    """What `zeroseg-export trt --onnx-only` writes: engine.json with no engine (TensorRT never ran)."""
    from zeroseg.export.tensorrt.manifest import write_engine_json

    folder = tmp_path / "trt"
    shutil.copytree(bundle, folder / "onnx")
    profile = {"input": "pixels", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 88], "max": [8, 3, 128, 128]}
    write_engine_json(folder, {"precision": "fp32", "profiles": [profile], "tensorrt": None, "device": None,
                               "engine": None, "bundle": "onnx"})  # fmt: skip
    return folder


def test_tensorrt_folder_refusals(engine_folder_without_engine, tmp_path, export_cli):
    folder = engine_folder_without_engine
    out = tmp_path / "repo"
    assert_one_line_error(
        export_cli("triton", folder, "--out", out, "--kind", "cpu"), "GPU only", "--kind gpu"
    )
    assert_one_line_error(export_cli("triton", folder, "--out", out), "--onnx-only", "no engine")
    assert not out.exists() and eh.leftovers(tmp_path) == []


# ---- bad inputs: one line, nothing written --------------------------------------------------------


def test_bad_inputs_are_one_line_errors(bundle, world, tmp_path, export_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"
    shutil.copytree(bundle, partial)
    (partial / "segmenter.onnx").unlink()
    out = tmp_path / "repo"
    cases = [
        ((empty,), ("not a zeroseg bundle", "zeroseg-export onnx")),
        ((world.checkpoint,), ("is a file", "zeroseg-export onnx")),
        ((tmp_path / "nope",), ("not found",)),
        ((partial,), ("segmenter.onnx", "missing", "re-export")),
        ((bundle, "--max-batch", "-1"), ("--max-batch", ">= 0")),
        ((bundle, "--instances", "0"), ("--instances", "positive integer")),
        ((bundle, "--max-batch", "100000000000"), ("--max-batch", "int32", "2147483647")),
        ((bundle, "--instances", str(2**31)), ("--instances", "int32", "2147483647")),
        ((bundle, "--kind", "tpu"), ("--kind", "cpu or gpu")),
    ]
    for args, fragments in cases:
        assert_one_line_error(export_cli("triton", args[0], "--out", out, *args[1:]), *fragments)
        assert not out.exists()
    out.mkdir()
    (out / "old.txt").write_text("keep")
    assert_one_line_error(export_cli("triton", bundle, "--out", out), "already exists", "--force")
    assert (out / "old.txt").read_text() == "keep"
    assert export_cli("triton", bundle, "--out", out, "--force").code == 0
    assert not (out / "old.txt").exists() and (out / "segmenter" / "config.pbtxt").is_file()
    assert eh.leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing(bundle, tmp_path, export_cli, monkeypatch):
    from zeroseg.export.triton_server import repo as triton_repo

    calls = []
    real = shutil.copyfile

    def full_disk(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(triton_repo.shutil, "copyfile", full_disk)
    out = tmp_path / "repo"
    assert_one_line_error(export_cli("triton", bundle, "--out", out), "no space left", "--out")
    assert not out.exists() and eh.leftovers(tmp_path) == []
    out.mkdir()
    calls.clear()
    assert_one_line_error(export_cli("triton", bundle, "--out", out, "--force"), "no space left")
    assert out.is_dir() and list(out.iterdir()) == [] and eh.leftovers(tmp_path) == []


def test_the_exporter_needs_neither_tritonclient_nor_torch(bundle, tmp_path):
    code = """
    import sys
    from pathlib import Path
    from zeroseg.export.triton_server.repo import TritonSettings, export_triton

    data = export_triton(TritonSettings(Path(sys.argv[1]), Path(sys.argv[2])), log=lambda line: None)
    bad = [m for m in ("tritonclient", "torch", "google.protobuf") if m in sys.modules]
    assert not bad and set(data["models"]) == {"image_encoder", "text_encoder", "segmenter"}, bad
    """
    done = eh.run_without_torch(code, str(bundle), str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "repo" / "segmenter" / "config.pbtxt").is_file()
