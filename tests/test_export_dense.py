"""The dense head inside the engines: `--head dense` at export, recorded in the manifest, the same
labels as `Segmenter(head="dense")` in ONNX Runtime and AOTInductor, the head read back from the
artefact, and a head the artefact was not exported with refused in one line (load and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import export_helpers as eh
import helpers
import numpy as np
import pytest
from aoti_cache import SHORT_SIDE as AOTI_SIDE
from aoti_cache import cached_bundle
from helpers import assert_one_line_error
from PIL import Image

import zeroseg
from zeroseg.errors import ZerosegError
from zeroseg.export.core.manifest import read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = eh.COLOURS


def _dense_onnx(tmp_path_factory) -> Path:
    """The bundled checkpoint's ONNX bundle with the dense head (short side 256, the six colours, no
    int8), once per test run."""

    def build(out: Path) -> None:
        with helpers.torch_threads(1):
            eh.export(
                zeroseg.bundled_checkpoint(), out, labels=COLOURS, threads=1, head="dense", short_side=256
            )

    return eh.shared_bundle(tmp_path_factory, "shapeworld-dense", build)


@pytest.fixture(scope="module")
def dense_onnx(tmp_path_factory) -> Path:
    return _dense_onnx(tmp_path_factory)


def _scenes() -> list[Image.Image]:
    """ShapeWorld scenes of three sizes (square, landscape, portrait)."""
    images = eh.scenes(4, seed=33, size=192)
    return [images[0], images[1].resize((240, 160)), images[2].resize((150, 210)), images[3]]


def _agreement(seg, ref, images) -> float:
    got, want = seg(images, COLOURS), ref(images, COLOURS)
    agree = total = 0
    for g, w, img in zip(got, want, images, strict=True):
        assert g.labels.shape == (img.height, img.width) and g.class_names == w.class_names
        assert g.segment_labels.shape == w.segment_labels.shape  # per patch, as name_patches
        agree, total = agree + int((g.labels == w.labels).sum()), total + g.labels.size
    return agree / total


# ---- bad input: no export needed -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["onnx", "aoti", "trt"])
def test_export_refuses_an_unknown_head_in_one_line(export_cli, tmp_path, command):
    out = tmp_path / "out"
    run = export_cli(command, "bundled", "--out", out, "--head", "foo")
    assert_one_line_error(run, "--head must be paper or dense, got 'foo'")
    assert not out.exists() and not eh.leftovers(tmp_path)


def test_head_names_normalise_in_one_place():
    from zeroseg.infer.factory import HEADS, head_name
    from zeroseg.infer.segmenter import HEADS as SEGMENTER_HEADS

    assert HEADS == SEGMENTER_HEADS == ("paper", "dense")
    assert [head_name(h) for h in ("paper", "segments", " Dense ", "SEGMENTS")] == [
        "paper", "paper", "dense", "paper",
    ]  # fmt: skip
    for bad in ("foo", "", None, 3):
        with pytest.raises(ZerosegError, match="--head must be paper or dense") as info:
            head_name(bad)
        assert "\n" not in str(info.value)


def test_a_bundle_without_a_head_record_runs_the_papers(tmp_path):
    """Bundles written before --head existed have no `head` key: they hold the paper's head."""
    from zeroseg.export.core.manifest import BundleManifest, canonical_sha256, write_manifest
    from zeroseg.export.loader import artefact_head

    empty: dict = {}
    write_manifest(tmp_path, BundleManifest(empty, empty, empty, empty, empty, empty, empty, empty, empty))
    data = json.loads((tmp_path / "manifest.json").read_text())
    data.pop("head")
    data["manifest_sha256"] = canonical_sha256(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(tmp_path).head == "paper" and artefact_head(tmp_path) == "paper"
    fix = "exported with the paper head, not dense: re-export it with --head dense"
    with pytest.raises(ZerosegError, match=fix):
        zeroseg.load(tmp_path, head="dense")


def test_trt_head_runs_the_dense_head_in_pytorch(world):
    """`TRTSegmenter.head` paints with engine.json's head: the dense one gives `Segmenter(head="dense")`'s
    labels on the same encoder output (no TensorRT needed: the head is PyTorch)."""
    from zeroseg.export.tensorrt.runtime import TRTSegmenter
    from zeroseg.infer.segmenter import Segmenter

    ref = Segmenter(world.checkpoint, head="dense")
    images = eh.scenes(2, seed=8, size=64)
    space, text = ref.encode_classes(COLOURS)
    out = ref.forward(ref.preprocess(images, ref.input_size(64, 64)))
    trt = TRTSegmenter.__new__(TRTSegmenter)
    trt.logit_scale, trt.backend = ref.logit_scale, None
    sizes = [(64, 64)] * 2
    per = {}
    for head in ("dense", "paper"):
        trt.head_mode, ref.head_mode = head, head
        got = trt.head(out, text, sizes, bg_thresh=0.3, space=space)
        want = ref.head(out, text, sizes, bg_thresh=0.3, space=space)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g.labels, w.labels) and np.array_equal(g.segment_labels, w.segment_labels)
        per[head] = got[0].segment_labels.shape
    assert per == {"dense": (out.maps[0, 0].numel(),), "paper": (out.maps.shape[1],)}


# ---- ONNX: the dense end-to-end graph ------------------------------------------------------------


@pytest.mark.slow
def test_dense_onnx_bundle_matches_segmenter_dense(dense_onnx):
    manifest = read_manifest(dense_onnx)
    assert manifest.head == "dense" and manifest.parity["head"] == "dense"
    assert manifest.parity["segmenter"]["pixel_agreement"] >= 0.999
    outputs = {t["name"]: t["dims"] for t in manifest.graphs["segmenter"]["outputs"]}
    assert outputs["segment_labels"] == outputs["segment_probs"] == ["batch", "patches"]
    seg = zeroseg.load(dense_onnx, threads=1)  # the artefact's head by default
    assert seg.head_mode == "dense"
    ref = zeroseg.load("bundled", head="dense", short_side=256)
    assert _agreement(seg, ref, _scenes()) >= 0.999
    (one,) = seg(_scenes()[:1], COLOURS)
    h, w = seg.input_size(192, 192)
    p = manifest.patch
    assert one.segment_labels.shape == one.segment_probs.shape == ((h // p) * (w // p),)


@pytest.mark.slow
def test_a_dense_bundle_refuses_the_papers_head_and_the_cli_runs_it(dense_onnx, cli, tmp_path):
    fix = "exported with the dense head, not paper: re-export it with --head paper"
    with pytest.raises(ZerosegError, match=fix) as info:
        zeroseg.load(dense_onnx, head="segments")
    assert "\n" not in str(info.value)
    image = tmp_path / "scene.png"
    _scenes()[1].save(image)
    out = tmp_path / "bad"
    run = cli("segment", image, "--engine", dense_onnx, "--head", "paper", "--labels", "red", "--out", out)
    assert_one_line_error(run, "--head paper")
    assert not out.exists()

    def labels(name: str, *args) -> np.ndarray:
        run = cli("segment", *args, image, "--labels", "red,green,blue", "--out", tmp_path / name)
        assert run.code == 0, run.err
        return np.asarray(Image.open(tmp_path / name / "scene_labels.png"))

    engine = labels("engine", "--engine", dense_onnx, "--head", "dense", "--threads", "1")
    torch_dense = labels("torch", "bundled", "--head", "dense", "--short-side", "256")
    assert (engine == torch_dense).mean() >= 0.999


@pytest.mark.slow
def test_trt_graph_of_a_dense_bundle_records_and_gates_the_dense_head(dense_onnx, tmp_path):
    """Everything before the TensorRT builder: engine.json's head is the bundle's, gated with it."""
    from zeroseg.export.loader import artefact_head
    from zeroseg.export.tensorrt.export import TrtSettings, export_trt
    from zeroseg.export.tensorrt.manifest import read_engine_json

    out = tmp_path / "engine"
    with helpers.torch_threads(1):
        export_trt(TrtSettings(source=dense_onnx, out=out, onnx_only=True, progress=False, threads=1),
                   log=lambda *_: None)  # fmt: skip
    meta = read_engine_json(out)
    assert meta["head"] == meta["parity"]["head"] == "dense" and meta["parity"]["pixel_agreement"] == 1.0
    assert artefact_head(out) == "dense"
    with pytest.raises(ZerosegError, match="re-export it with --head paper"):
        zeroseg.load(out, head="paper")


# ---- AOTInductor: the dense package (cached across sessions, like the paper's) --------------------


@pytest.mark.slow
def test_dense_aoti_package_matches_segmenter_dense():
    bundle = cached_bundle("dense")
    manifest = read_manifest(bundle, fmt="zeroseg-aoti-bundle")
    assert manifest.head == "dense" and manifest.parity["segmenter"]["pixel_agreement"] >= 0.999
    seg = zeroseg.load(bundle, threads=1)
    assert seg.head_mode == "dense"
    ref = zeroseg.load("bundled", head="dense", short_side=AOTI_SIDE)
    assert _agreement(seg, ref, _scenes()) >= 0.999
    with pytest.raises(ZerosegError, match="exported with the dense head, not paper"):
        zeroseg.load(bundle, head="paper")
