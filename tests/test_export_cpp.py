"""The C++ runner (export/aoti/cpp): built against the wheel's libtorch, its label maps equal Python's.

The build is cached (`zeroseg.export.aoti.cpp_build`, keyed by the sources and torch) and so is the
bundle (`aoti_cache`); with both warm this file takes a few seconds.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from aoti_cache import LABELS, SHORT_SIDE, cached_bundle
from PIL import Image

from zeroseg.errors import ZerosegError


@pytest.fixture(scope="session")
def exe():
    from zeroseg.export.aoti.cpp_build import build_runner, missing_system_packages

    try:
        return build_runner(log=lambda *_: None)
    except ZerosegError as exc:
        if missing_system_packages():  # no root / no apt here: say so instead of failing
            pytest.skip(f"C++ runner not buildable here: {exc}")
        raise


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Two ShapeWorld scenes: a PNG at the network size and a non-square JPEG that must be resized."""
    from zeroseg.data.scenes import generate_scene

    root = tmp_path_factory.mktemp("cpp_scenes")
    png, jpg = root / "scene_a.png", root / "scene_b.jpg"
    Image.fromarray(generate_scene(21, 128, index=0).image).save(png)
    Image.fromarray(generate_scene(21, 256, index=1).image).resize((210, 150), Image.BICUBIC).save(
        jpg, quality=90
    )
    return [png, jpg]


def _run(exe, *args, check=True):
    done = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_labels_match_python(exe, scenes, tmp_path):
    import zeroseg
    from zeroseg.data.images import open_rgb, to_unit_tensor
    from zeroseg.preprocess import resize_tensor

    bundle = cached_bundle()
    out = tmp_path / "out"
    _run(
        exe,
        bundle,
        scenes[1],
        scenes[0],
        "--out",
        out,
        "--dump-input",
        tmp_path / "input.bin",
        "--threads",
        1,
    )
    seg = zeroseg.Segmenter.from_checkpoint(zeroseg.bundled_checkpoint(), short_side=SHORT_SIDE)
    images = [open_rgb(p) for p in scenes]
    want = seg(images, [e[0] for e in LABELS])
    agree = total = 0
    for path, image, result in zip(scenes, images, want, strict=True):
        labels = np.array(Image.open(out / f"{path.stem}_labels.png"))
        assert Image.open(out / f"{path.stem}_labels.png").mode == "P"
        assert labels.shape == (image.height, image.width)
        agree, total = agree + int((labels == result.labels).sum()), total + labels.size
        data = json.loads((out / f"{path.stem}.json").read_text())
        assert data["class_names"] == list(result.class_names)
        assert data["input_hw"] == list(seg.input_size(image.height, image.width))
        for name, share in result.fractions().items():
            assert abs(data["fractions"].get(name, 0.0) - share) < 2e-3
    assert agree / total >= 0.999
    # the resize itself (the JPEG: 150x210 -> 128x176), against PyTorch's antialiased bicubic
    size = seg.input_size(images[1].height, images[1].width)
    ref = resize_tensor(to_unit_tensor(images[1]), size).numpy()
    got = np.fromfile(tmp_path / "input.bin", dtype=np.float32).reshape(ref.shape)
    assert np.abs(got - ref).max() < 1e-5


def test_timing_loop(exe, scenes, tmp_path):
    done = _run(exe, cached_bundle(), scenes[0], "--out", tmp_path, "--repeat", 2)
    assert "latency 128x128 -> input 128x128, 2 runs" in done.stdout and "p50" in done.stdout


def test_bad_input_is_one_line(exe, scenes, tmp_path):
    import shutil

    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"hello")
    done = _run(exe, cached_bundle(), bad, "--out", tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "neither a PNG nor a JPEG" in done.stderr
    copy = tmp_path / "bundle"
    shutil.copytree(cached_bundle(), copy)
    with open(copy / "vocab.bin", "r+b") as fh:
        fh.seek(40)
        fh.write(b"\0\0\0\0")
    done = _run(exe, copy, scenes[0], "--out", tmp_path, check=False)
    assert done.returncode == 2 and "vocab.bin does not match its sha256" in done.stderr
    done = _run(exe, tmp_path / "nothing", scenes[0], check=False)
    assert done.returncode == 2 and "bundle folder not found" in done.stderr
