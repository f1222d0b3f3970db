"""`zeroseg-export executorch`: the `.pte` gated, run by `ExecuTorchSegmenter` and by the C++ runner
(`zeroseg_et`, linked against ExecuTorch's runtime only), label maps equal to PyTorch's on ShapeWorld
scenes and on a real photograph (matplotlib's grace_hopper.jpg); every bad input is one line.

The fp32 + int8 bundle is shared and cached (`aoti_cache.cached_executorch_bundle`), so is the runner's
CMake build (`zeroseg.export.aoti.cpp_build`, keyed by the sources and the executorch version).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
from aoti_cache import ET_ASPECTS, LABELS, SHORT_SIDE, cached_bundle, cached_executorch_bundle
from PIL import Image

from zeroseg.errors import ZerosegError

pytestmark = pytest.mark.slow  # the export (fp32 + int8, three aspects) and the runner's CMake build
NAMES = [n[0] for n in LABELS]


@pytest.fixture(scope="module")
def bundle() -> Path:
    return cached_executorch_bundle()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """ShapeWorld scenes (square, and 4:3 JPEG) and the real photograph at its own 512 x 600."""
    from matplotlib import cbook

    from zeroseg.data.scenes import generate_scene

    root = tmp_path_factory.mktemp("et_images")
    square, wide = root / "scene_a.png", root / "scene_b.jpg"
    Image.fromarray(generate_scene(21, 128, index=0).image).save(square)
    Image.fromarray(generate_scene(21, 256, index=1).image).resize((200, 150), Image.BICUBIC).save(
        wide, quality=90
    )
    photo = root / "grace_hopper.jpg"
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), photo)
    return [square, wide, photo]


@pytest.fixture(scope="module")
def exe() -> Path:
    from zeroseg.export.aoti.cpp_build import build_runner

    return build_runner(runtime="executorch", log=lambda *_: None)


def _torch_labels(paths, **kw) -> list[np.ndarray]:
    import zeroseg

    seg = zeroseg.load("bundled", short_side=SHORT_SIDE)
    return [r.labels for r in seg([Image.open(p).convert("RGB") for p in paths], NAMES, **kw)]


def test_manifest_reports_the_gates_and_what_xnnpack_took(bundle):
    from zeroseg.export.core.manifest import read_manifest
    from zeroseg.export.executorch.export import EXECUTORCH_FORMAT

    m = read_manifest(bundle, fmt=EXECUTORCH_FORMAT)
    assert m.parity["segmenter"]["pixel_agreement"] >= 0.999 and m.parity["images"] == 15
    assert m.int8["pixel_agreement_with_torch_fp32"] >= 0.98 and m.int8["file"] == "segmenter.int8.pte"
    assert m.graphs["segmenter"]["file"] == "segmenter.pte" and m.graphs["segmenter"]["int8_file"]
    methods = m.exporter["delegation"]["methods"]
    assert len(methods) == len(ET_ASPECTS) == len(m.exporter["static_inputs"])
    for report in methods.values():  # the encoder is XNNPACK's; what stays portable is named
        # the windowed encoder's gathers (constant index arrays) sit between delegates: 25 for the
        # bundled model, 12 with global attention
        assert 1 <= report["delegates"] <= 32 and report["delegated_nodes"] > report["portable_nodes"]
        assert "aten_native_layer_norm_default" not in report["portable_ops"]  # spelled out for XNNPACK
        assert "aten_index_select_default" in report["portable_ops"]  # the head's upsampling taps
    assert {f for f in m.files} >= {"segmenter.pte", "segmenter.int8.pte", "vocab.bin", "text_encoder.pt"}


def test_python_runtime_labels_equal_torch(bundle, images):
    import zeroseg
    from zeroseg.export.executorch.runtime import ExecuTorchSegmenter

    want = _torch_labels(images)
    pics = [Image.open(p).convert("RGB") for p in images]
    seg = zeroseg.load(bundle, threads=2)
    assert isinstance(seg, ExecuTorchSegmenter)
    for got, ref in zip(seg(pics, NAMES), want, strict=True):
        assert got.labels.shape == ref.shape and (got.labels == ref).mean() >= 0.999
    int8 = zeroseg.load(bundle, precision="int8")
    agree = [(g.labels == r).mean() for g, r in zip(int8(pics, NAMES), want, strict=True)]
    assert min(agree) >= 0.97 and np.mean(agree) >= 0.98, agree
    new = seg(pics[:1], ["a red square", "a blue circle"])[0]  # new names through text_encoder.pt
    assert list(new.class_names[1:]) == ["a red square", "a blue circle"]


def _run(exe, *args):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cpp_runner_labels_equal_python_and_links_no_libtorch(exe, bundle, images, tmp_path):
    import zeroseg

    done = _run(exe, bundle, *images, "--out", tmp_path / "fp32", "--threads", "2", "--repeat", "3")
    assert done.returncode == 0, done.stderr
    assert "latency" in done.stdout and "2 threads" in done.stdout
    seg = zeroseg.load(bundle)
    want = seg([Image.open(p).convert("RGB") for p in images], NAMES)
    for path, ref in zip(images, want, strict=True):
        got = np.array(Image.open(tmp_path / "fp32" / f"{path.stem}_labels.png"))
        assert got.shape == ref.labels.shape and (got == ref.labels).mean() >= 0.999, path.name
        info = json.loads((tmp_path / "fp32" / f"{path.stem}.json").read_text())
        assert info["program"] == "segmenter.pte" and info["class_names"] == ["background", *NAMES]
        assert sum(info["fractions"].values()) == pytest.approx(1.0)
    done = _run(exe, bundle, images[2], "--out", tmp_path / "int8", "--precision", "int8")
    assert done.returncode == 0, done.stderr
    got = np.array(Image.open(tmp_path / "int8" / "grace_hopper_labels.png"))
    assert (got == want[2].labels).mean() >= 0.97
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "libexecutorch.so" in ldd and "libtorch" not in ldd and "libc10" not in ldd, ldd


def test_deployed_size_is_under_50_mb(exe, bundle):
    from zeroseg.export.executorch.size import deployed_size

    size = deployed_size(exe, bundle)
    assert size["libraries"] and not any(n.startswith(("libtorch", "libc10")) for n in size["libraries"])
    assert 0 < size["total_bytes"] < 50e6, size


def test_edited_program_and_wrong_bundle_are_refused(exe, bundle, images, tmp_path):
    import zeroseg
    from zeroseg.bundled import bundled_checkpoint

    edited = tmp_path / "edited"
    shutil.copytree(bundle, edited)
    with open(edited / "segmenter.pte", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ZerosegError, match="sha256"):
        zeroseg.load(edited)
    done = _run(exe, edited, images[0], "--out", tmp_path / "o")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "sha256" in done.stderr
    done = _run(exe, bundled_checkpoint().parent, images[0], "--out", tmp_path / "o")  # not a bundle
    assert done.returncode == 2 and "manifest.json" in done.stderr and not (tmp_path / "o").exists()
    done = _run(exe, cached_bundle(), images[0], "--out", tmp_path / "o")  # an AOTInductor bundle
    assert done.returncode == 2 and "not a zeroseg ExecuTorch bundle manifest" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()


def test_runner_bad_input_is_one_line_and_writes_nothing(exe, bundle, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases = [
        ((bundle, bad), "bad.png"),
        ((bundle, tmp_path / "missing.jpg"), "missing.jpg"),
        ((bundle, images[0], "--precision", "int4"), "fp32 or int8"),
        ((bundle, images[0], "--bg-thresh", "2"), "--bg-thresh"),
    ]
    for args, fragment in cases:
        done = _run(exe, *args, "--out", tmp_path / "out")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert fragment in lines[0], (fragment, lines[0])
        assert not (tmp_path / "out").exists()
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (200, 30, 30)).save(wide)  # 4:1: no method of that input size
    done = _run(exe, bundle, wide, "--out", tmp_path / "out")
    assert done.returncode == 2 and "--aspects" in done.stderr


def test_python_runtime_refusals_are_one_line(bundle):
    import zeroseg

    seg = zeroseg.load(bundle)
    with pytest.raises(ZerosegError, match="--aspects"):
        seg([Image.new("RGB", (400, 100))], NAMES)
    with pytest.raises(ZerosegError, match="--max-output-side 2400"):
        seg([Image.new("RGB", (2400, 1800))], NAMES)
    with pytest.raises(ZerosegError, match="runs on cpu"):
        zeroseg.load(bundle, device="cuda")


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """A bundle exported without --labels: fp32, one aspect, short side 64."""
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.export.executorch.export import ExecuTorchSettings, export_executorch

    out = tmp_path_factory.mktemp("et_nolabels") / "bundle"
    settings = ExecuTorchSettings(checkpoint=bundled_checkpoint(), out=out, short_side=64, aspects=((1, 1),),
                                  progress=False)  # fmt: skip
    export_executorch(settings, log=lambda *_: None)
    return out


def test_runner_needs_labels_in_the_bundle(exe, unlabelled, images, tmp_path):
    import zeroseg

    done = _run(exe, unlabelled, images[0], "--out", tmp_path / "o")
    assert done.returncode == 2 and "--labels" in done.stderr and not (tmp_path / "o").exists()
    assert zeroseg.load(unlabelled)([Image.open(images[0])], NAMES)[0].labels.shape == (128, 128)


def test_export_refusals_are_one_line(export_cli, tmp_path, monkeypatch):
    empty = tmp_path / "calib"
    empty.mkdir()
    cases = [
        (("--short-side", "130"), "patch"),
        (("--int8", "--calib", empty), "no images"),
        (("--calib", empty), "--int8"),
        (("--aspects", "4x3"), "W:H"),
        (("--max-output-side", "0"), "--max-output-side"),
        (("--labels", "a,b,c", "--max-classes", "3"), "--max-classes"),
    ]
    for args, fragment in cases:
        out = tmp_path / "out"
        run = export_cli("executorch", "bundled", "--out", out, *args)
        helpers.assert_one_line_error(run, fragment)
        assert not out.exists()


def test_missing_executorch_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['executorch'] = None; from zeroseg.export.cli import main; "
            "sys.argv = ['zeroseg-export', 'executorch', 'bundled', '--out', sys.argv[1]]; "
            "main()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert done.returncode == 2 and lines and "pip install 'zeroseg[edge]'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_dense_head_program_in_python_and_cpp(exe, images, tmp_path):
    import zeroseg
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.export.executorch.export import ExecuTorchSettings, export_executorch

    out = tmp_path / "dense"
    settings = ExecuTorchSettings(checkpoint=bundled_checkpoint(), out=out, labels=LABELS, short_side=64,
                                  aspects=((1, 1),), head="dense", progress=False)  # fmt: skip
    manifest = export_executorch(settings, log=lambda *_: None)
    assert manifest.head == "dense" and manifest.exporter["max_classes"] == 32
    seg = zeroseg.load(out)
    ref = zeroseg.load("bundled", short_side=64, head="dense")([Image.open(images[0]).convert("RGB")], NAMES)
    got = seg([Image.open(images[0]).convert("RGB")], NAMES)[0]
    assert (got.labels == ref[0].labels).mean() >= 0.999
    with pytest.raises(ZerosegError, match="--head"):
        zeroseg.load(out, head="paper")
    done = _run(exe, out, images[0], "--out", tmp_path / "cpp")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "cpp" / "scene_a.json").read_text())["head"] == "dense"
    assert (np.array(Image.open(tmp_path / "cpp" / "scene_a_labels.png")) == got.labels).mean() >= 0.999


def test_bench_edge_times_cpp_beside_python_and_sizes_both(bundle, tmp_path, capsys, monkeypatch):
    from zeroseg.bench.cli import main

    out = tmp_path / "edge.json"
    run = helpers.run_console(main, "zeroseg-bench", ["edge", bundle, "--iters", "2", "--repeat", "1",
                                                     "--image-size", "160x120", "--json", out],
                              capsys, monkeypatch)  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(out.read_text())
    for precision in ("fp32", "int8"):
        row = data["rows"][precision]
        assert row["cpp_median_ms"] > 0 and row["python_median_ms"] > 0
        assert row["label_agreement"] >= (0.999 if precision == "fp32" else 0.97)
    et, aoti = data["size"]["zeroseg_et"], data["size"]["zeroseg_aoti"]
    assert any(n.startswith("libexecutorch") for n in et["libraries"])
    assert not any(n.startswith(("libtorch", "libc10")) for n in et["libraries"])
    assert any("libtorch" in n for n in aoti["libraries"]) and aoti["total_bytes"] > 5 * et["total_bytes"]
    assert "C++" in run.out and data["env"]["cpu"]["flags"] is not None


def test_segment_eval_and_segment_dataset_run_the_engine(bundle, images, small_voc, cli, tmp_path):
    import export_helpers as eh

    out = tmp_path / "seg"
    res = cli("segment", "--engine", bundle, images[0], "--labels", ",".join(NAMES), "--out", out,
              "--precision", "int8")  # fmt: skip
    assert res.code == 0, res.err
    meta = json.loads((out / "scene_a.json").read_text())
    assert (
        meta["engine"] == str(bundle)
        and meta["precision"] == "int8"
        and (out / "scene_a_labels.png").is_file()
    )
    res = cli("eval", "--engine", bundle, "--dataset", small_voc, "-q")
    assert res.code == 0, res.err
    engine_miou = eh.parse_miou(res.out)
    res = cli("eval", "bundled", "--dataset", small_voc, "--short-side", str(SHORT_SIDE), "-q")
    assert res.code == 0, res.err
    assert engine_miou == pytest.approx(eh.parse_miou(res.out), abs=2e-3)
    folder = small_voc / "JPEGImages"
    res = cli(
        "segment-dataset", folder, "--out", tmp_path / "ds", "--engine", bundle, "--labels", ",".join(NAMES)
    )
    assert res.code == 0, res.err
    assert len(list((tmp_path / "ds").glob("*_labels.png"))) == len(list(folder.glob("*.jpg")))
