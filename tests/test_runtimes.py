"""Every runtime through `zeroseg.load`, one set of tests: the same labels as PyTorch, a tampered
artefact refused, bad options and bad inputs refused in one line — parametrised over the runtimes
this machine has (PyTorch, ONNX Runtime fp32 and int8, OpenVINO, AOTInductor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import export_helpers as eh
import numpy as np
import pytest
from aoti_cache import SHORT_SIDE as AOTI_SIDE
from aoti_cache import cached_bundle
from PIL import Image

import zeroseg
from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import FORMATS, RUNTIMES, detect_format

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

COLOURS = eh.COLOURS
#: runtime case -> (artefact kind, runtime, precision, pixel-agreement gate with PyTorch fp32)
CASES = {
    "torch": ("checkpoint", "torch", None, 1.0),
    "onnxruntime": ("onnx", "onnxruntime", "fp32", 0.999),
    "onnxruntime-int8": ("onnx", "onnxruntime", "int8", 0.98),
    "openvino": ("onnx", "openvino", None, 0.999),
    "aoti": ("aoti", "aoti", None, 0.999),
}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    """The bundled checkpoint, its ONNX bundle (its own short side and head: 512, dense; vocabulary,
    static int8) and its AOTInductor package (short side 128, the paper's head), each built once per
    run and shared with the export tests."""
    onnx_bundle, _ = eh.shapeworld_bundle(tmp_path_factory)
    return {"checkpoint": zeroseg.bundled_checkpoint(), "onnx": onnx_bundle, "aoti": cached_bundle()}


def _short_side(kind: str) -> int:
    return AOTI_SIDE if kind == "aoti" else 256


def _scenes(n: int = 3) -> list[Image.Image]:
    """ShapeWorld scenes of three sizes (square, landscape, portrait): every runtime resizes them."""
    images = eh.scenes(n, seed=21, size=192)
    return [images[0], images[1].resize((240, 160)), images[2].resize((150, 210))]


@pytest.mark.parametrize("case", list(CASES))
def test_same_labels_as_pytorch(artefacts, case):
    kind, runtime, precision, gate = CASES[case]
    if runtime == "openvino":
        from zeroseg.export.openvino.runtime import openvino_unavailable

        if openvino_unavailable():
            pytest.skip(openvino_unavailable())
    side = _short_side(kind)
    seg = zeroseg.load(artefacts[kind], runtime=runtime, precision=precision, threads=1, short_side=side)
    ref = zeroseg.load("bundled", short_side=side, head=seg.head_mode)  # each artefact's own head
    images = _scenes()
    got, want = seg(images, COLOURS), ref(images, COLOURS)
    for g, w, img in zip(got, want, images, strict=True):
        assert g.labels.shape == (img.height, img.width)
        assert g.class_names == w.class_names
        agreement = float((g.labels == w.labels).mean())
        assert agreement >= gate, (case, agreement)
    if case != "torch":
        assert type(seg).__name__ == RUNTIMES[runtime].target.rpartition(":")[2]


def _damage(kind: str, src: Path, dst: Path) -> str:
    """A copy of the artefact with one byte of its model changed; returns what the refusal names."""
    if kind == "checkpoint":
        import torch

        payload = torch.load(src, weights_only=True)
        key = next(iter(payload["student"]))
        payload["student"][key] = payload["student"][key] + 1
        torch.save(payload, dst)
        return "checksum"
    shutil.copytree(src, dst)
    path = dst / ("segmenter.onnx" if kind == "onnx" else "segmenter.pt2")  # what opening loads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "sha256"


@pytest.mark.parametrize("kind", ["checkpoint", "onnx", "aoti"])
def test_a_tampered_artefact_is_refused(artefacts, tmp_path, kind):
    bad = tmp_path / ("bad.pt" if kind == "checkpoint" else "bad")
    fragment = _damage(kind, artefacts[kind], bad)
    with pytest.raises(ZerosegError, match=fragment) as info:
        zeroseg.load(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"precision": "int4"}, "not precision 'int4'"),
        ({"device": "tpu"}, "not 'tpu'"),
        ({"threads": 0}, "threads must be a positive whole number"),
        ({"threads": -3}, "threads must be a positive whole number"),
        ({"short_side": -1}, "short side must be a positive whole number"),
        ({"runtime": "tensorrt"}, "cannot run"),
        ({"runtime": "nonsense"}, "cannot run"),
    ],
)
@pytest.mark.parametrize("kind", ["checkpoint", "onnx", "aoti"])
def test_bad_options_are_one_line_before_loading(artefacts, kind, options, fragment):
    with pytest.raises(ZerosegError, match=fragment) as info:
        zeroseg.load(artefacts[kind], **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["onnx", "aoti"])
def test_engines_refuse_the_other_head_and_other_precisions(artefacts, kind):
    """A bundle refuses the head it was not exported with (the fix: re-export with --head ...): the
    ONNX bundle of the bundled model has its dense head, the AOTInductor package the paper's."""
    own, other = ("dense", "paper") if kind == "onnx" else ("paper", "dense")
    fix = f"exported with the {own} head, not {other}: re-export it with --head {other}"
    with pytest.raises(ZerosegError, match=fix):
        zeroseg.load(artefacts[kind], head=other)
    if kind == "aoti":
        with pytest.raises(ZerosegError, match="int8 runs on onnxruntime"):
            zeroseg.load(artefacts[kind], precision="int8")
        with pytest.raises(ZerosegError, match="runs on cpu"):
            zeroseg.load(artefacts[kind], device="cuda")


@pytest.mark.parametrize("case", ["torch", "onnxruntime", "aoti"])
def test_bad_inputs_are_one_line(artefacts, tmp_path, case):
    kind, runtime, precision, _ = CASES[case]
    seg = zeroseg.load(artefacts[kind], runtime=runtime, precision=precision, short_side=_short_side(kind))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    eh.smooth_image(64, 64, 0).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    for images, classes, fragment in (
        ([text], COLOURS, "not a readable image"),
        ([truncated], COLOURS, "not a readable image"),
        ([tmp_path / "missing.png"], COLOURS, "missing.png"),
        ([eh.smooth_image(64, 64, 1)], [], "class"),
    ):
        with pytest.raises(ZerosegError, match=fragment) as info:
            seg(images, classes)
        assert "\n" not in str(info.value)
    with pytest.raises(ZerosegError, match="bg|thresh"):
        seg([eh.smooth_image(64, 64, 1)], COLOURS, bg_thresh=1.5)


def test_the_format_is_read_from_the_artefact(artefacts, tmp_path):
    assert detect_format(artefacts["checkpoint"]).name == "checkpoint"
    assert detect_format(artefacts["onnx"]).name == "onnx"
    assert detect_format(artefacts["aoti"]).name == "aoti"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "someone-elses"}))
    for path, fragment in ((foreign, "not an exported bundle"), (tmp_path / "nowhere", "not found")):
        with pytest.raises(ZerosegError, match=fragment):
            zeroseg.load(path)
    # every bundle format names a runtime of the registry; the constants agree with the registry's
    from zeroseg.checkpoint import CHECKPOINT_FORMAT
    from zeroseg.export.aoti.export import AOTI_FORMAT
    from zeroseg.export.core.manifest import BUNDLE_FORMAT
    from zeroseg.export.executorch.export import EXECUTORCH_FORMAT
    from zeroseg.export.tensorrt.manifest import ENGINE_FORMAT

    assert set(FORMATS) == {CHECKPOINT_FORMAT, BUNDLE_FORMAT, AOTI_FORMAT, EXECUTORCH_FORMAT, ENGINE_FORMAT}
    assert all(set(f.runtimes) <= set(RUNTIMES) for f in FORMATS.values())


def test_cli_engine_takes_every_bundle_kind(artefacts, cli, tmp_path):
    """`zeroseg segment --engine` on an AOTInductor bundle and on ONNX via OpenVINO: PyTorch's labels."""
    image = tmp_path / "scene.png"
    _scenes()[1].save(image)

    def labels(name: str, *args) -> np.ndarray:
        out = tmp_path / name
        run = cli("segment", *args, image, "--labels", "red,green,blue", "--out", out)
        assert run.code == 0, run.err
        return np.asarray(Image.open(out / "scene_labels.png"))

    aoti = labels("aoti", "--engine", artefacts["aoti"], "--threads", "1")
    openvino = labels("openvino", "--engine", artefacts["onnx"], "--runtime", "openvino")
    assert (
        aoti == labels("torch128", "bundled", "--short-side", str(AOTI_SIDE), "--head", "paper")
    ).mean() >= 0.999
    assert (openvino == labels("torch", "bundled")).mean() >= 0.999  # the bundle's side and head: bundled's
