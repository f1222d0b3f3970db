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

pytestmark = pytest.mark.slow  # the CMake build of the runner: ~2 min uncached


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
    seg = zeroseg.Segmenter.from_checkpoint(zeroseg.bundled_checkpoint(), short_side=SHORT_SIDE, head="paper")
    images = [open_rgb(p) for p in scenes]
    want = seg(images, [e[0] for e in LABELS])
    agree = total = 0
    for path, image, result in zip(scenes, images, want, strict=True):
        labels = np.array(Image.open(out / f"{path.stem}_labels.png"))
        assert Image.open(out / f"{path.stem}_labels.png").mode == "P"
        assert labels.shape == (image.height, image.width)
        agree, total = agree + int((labels == result.labels).sum()), total + labels.size
        data = json.loads((out / f"{path.stem}.json").read_text())
        assert data["class_names"] == list(result.class_names) and data["head"] == "paper"
        assert data["input_hw"] == list(seg.input_size(image.height, image.width))
        for name, share in result.fractions().items():
            assert abs(data["fractions"].get(name, 0.0) - share) < 2e-3
    assert agree / total >= 0.999
    # the resize itself (the JPEG: 150x210 -> 128x176), against PyTorch's antialiased bicubic
    size = seg.input_size(images[1].height, images[1].width)
    ref = resize_tensor(to_unit_tensor(images[1]), size).numpy()
    got = np.fromfile(tmp_path / "input.bin", dtype=np.float32).reshape(ref.shape)
    assert np.abs(got - ref).max() < 1e-5


def test_dense_package_labels_match_python(exe, scenes, tmp_path):
    """A package exported with --head dense runs unchanged: its labels and class fractions are
    `Segmenter(head="dense")`'s, and the JSON names the head."""
    import zeroseg
    from zeroseg.data.images import open_rgb

    out = tmp_path / "out"
    _run(exe, cached_bundle("dense"), *scenes, "--out", out, "--threads", 1)
    seg = zeroseg.Segmenter.from_checkpoint(zeroseg.bundled_checkpoint(), short_side=SHORT_SIDE, head="dense")
    images = [open_rgb(p) for p in scenes]
    agree = total = 0
    for path, result in zip(scenes, seg(images, [e[0] for e in LABELS]), strict=True):
        labels = np.array(Image.open(out / f"{path.stem}_labels.png"))
        agree, total = agree + int((labels == result.labels).sum()), total + labels.size
        data = json.loads((out / f"{path.stem}.json").read_text())
        assert data["head"] == "dense"
        for name, share in result.fractions().items():
            assert abs(data["fractions"].get(name, 0.0) - share) < 2e-3
    assert agree / total >= 0.999


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


def _refused(done, *fragments: str) -> None:
    """Exit status 2 and one `error: ...` line naming every fragment."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr)


def _resign(folder, edit) -> None:
    """Apply `edit` to the folder's manifest and store the checksum Python computes for the result."""
    from zeroseg.export.core.manifest import canonical_sha256

    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    data["manifest_sha256"] = canonical_sha256(data)
    path.write_text(json.dumps(data, indent=2))


def test_manifest_checksums_are_verified_as_python_does(exe, scenes, tmp_path):
    """The runner used an edited manifest (bg_thresh) that Python refuses. It now checks the
    manifest's own sha256 over Python's canonical JSON (re-implemented in C++: keys in code point
    order, floats as Python's repr, \\u escapes) and every listed file's sha256. The canonical form
    is exercised where nlohmann's own dump differs from Python (floats in [1e15, 1e16)), on unicode
    keys and strings, and on 2000 random doubles: a manifest Python accepts, the runner accepts."""
    import random
    import shutil
    import struct

    from zeroseg.export.aoti.export import AOTI_FORMAT
    from zeroseg.export.core.manifest import read_manifest

    rng = random.Random(0)
    doubles = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(2000)]
    extra = {
        "floats": [f for f in doubles if f == f and abs(f) != float("inf")]
        + [1e15, 1234567890123456.8, 1e16, 1e-05, 0.0001, 5e-324, -0.0, 0.65, 1e22, 100.0],
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
        "strings": ["é", "日本", "😀", "\x7f", "\x01", "\u2028", 'q"b\\c/d\n\t\r\b\f', ""],
        "keys": {"b": 1, "a": 2, "é": 3, "Z": 4, "~": 5, "😀": 6, "\uffff": 7},
    }
    signed = tmp_path / "signed"
    shutil.copytree(cached_bundle(), signed)
    _resign(signed, lambda m: m["extra"].update(extra))
    read_manifest(signed, fmt=AOTI_FORMAT)  # Python accepts it ...
    _run(exe, signed, scenes[0], "--out", tmp_path / "ok")  # ... and so does the runner

    edited = tmp_path / "edited"
    shutil.copytree(cached_bundle(), edited)
    data = json.loads((edited / "manifest.json").read_text())
    data["model"]["inference"]["bg_thresh"] = 0.01
    (edited / "manifest.json").write_text(json.dumps(data, indent=2))
    out = tmp_path / "out"
    _refused(_run(exe, edited, scenes[0], "--out", out, check=False), "edited after export")
    assert not out.exists()

    damaged = tmp_path / "damaged"  # a file the runner does not use is verified too
    shutil.copytree(cached_bundle(), damaged)
    with open(damaged / "text_encoder.pt", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0\1\2\3")
    _refused(_run(exe, damaged, scenes[0], "--out", out, check=False), "text_encoder.pt does not match")
    _resign(damaged, lambda m: m["files"].update({"../outside.bin": "0" * 64}))
    _refused(_run(exe, damaged, scenes[0], "--out", out, check=False), "not a file name inside the bundle")
    assert not out.exists()


@pytest.fixture(scope="session")
def exif_images(scenes, tmp_path_factory):
    """The non-square JPEG scene saved with EXIF orientation 3, 5, 6 and 8 (JPEG) and 7 (PNG eXIf)."""
    root = tmp_path_factory.mktemp("cpp_exif")
    base = Image.open(scenes[1])
    paths = []
    for orientation, ext in [(3, "jpg"), (5, "jpg"), (6, "jpg"), (8, "jpg"), (7, "png")]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        paths.append(root / f"exif{orientation}.{ext}")
        base.save(paths[-1], exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    return paths


def test_exif_orientation_matches_python(exe, exif_images, tmp_path):
    """The runner ignored EXIF orientation (Orientation 6: 600x400 labels where Python gives
    400x600); it now turns each image upright as PIL's exif_transpose does: the label maps have
    Python's shape and content, and the network input equals PyTorch's resize of the upright image."""
    import zeroseg
    from zeroseg.data.images import open_rgb, to_unit_tensor
    from zeroseg.preprocess import resize_tensor

    out = tmp_path / "out"
    _run(exe, cached_bundle(), *exif_images, "--out", out, "--dump-input", tmp_path / "input.bin")
    seg = zeroseg.Segmenter.from_checkpoint(zeroseg.bundled_checkpoint(), short_side=SHORT_SIDE, head="paper")
    images = [open_rgb(p) for p in exif_images]
    assert {im.size for im in images} == {(210, 150), (150, 210)}
    for path, image, result in zip(exif_images, images, seg(images, [e[0] for e in LABELS]), strict=True):
        labels = np.array(Image.open(out / f"{path.stem}_labels.png"))
        assert labels.shape == (image.height, image.width), path.name
        assert (labels == result.labels).mean() >= 0.999, path.name
    ref = resize_tensor(to_unit_tensor(images[0]), seg.input_size(images[0].height, images[0].width))
    got = np.fromfile(tmp_path / "input.bin", dtype=np.float32).reshape(ref.shape)
    assert np.abs(got - ref.numpy()).max() < 1e-5


@pytest.mark.parametrize("kind", ["baseline JPEG", "progressive JPEG", "JPEG without its end", "PNG"])
def test_truncated_image_is_refused(exe, scenes, tmp_path, kind):
    """A truncated JPEG gave labels (libjpeg only warns and pads with grey); Python refuses it. Now
    a JPEG cut short, even by its end marker alone, or a PNG cut inside its pixel data is one line,
    and nothing is written."""
    from zeroseg.data.images import open_rgb

    source = tmp_path / ("src.png" if kind == "PNG" else "src.jpg")
    options = {} if kind == "PNG" else {"quality": 90, "progressive": "progressive" in kind}
    Image.open(scenes[1]).save(source, **options)
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: len(data) - 2 if "end" in kind else len(data) * 2 // 3])
    with pytest.raises(ZerosegError, match="not a readable image"):
        open_rgb(cut)
    out = tmp_path / "out"
    what = "PNG" if kind == "PNG" else "JPEG"
    _refused(_run(exe, cached_bundle(), cut, "--out", out, check=False), f"is not a readable {what}")
    assert not out.exists()


def test_inputs_are_checked_before_anything_is_written(exe, scenes, tmp_path):
    """--out was created before a missing image failed, and a 60000x60000 PNG header gave
    std::bad_alloc. Every input is now checked (file, format, header, pixel cap of Python's
    MAX_PIXELS, colliding outputs) before the bundle loads, and --out appears only with an output."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    huge = tmp_path / "huge.png"
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat)
    twin = tmp_path / "twin" / scenes[0].name
    twin.parent.mkdir()
    twin.write_bytes(scenes[0].read_bytes())
    out = tmp_path / "out"
    cases = [
        ([scenes[0], tmp_path / "missing.jpg"], out, "image not found"),
        ([scenes[0], huge], out, "image too large (> 268435456 pixels)"),
        ([tmp_path], out, "is a folder, not an image"),
        ([scenes[0], twin], out, "share the file name"),
        ([scenes[0]], huge, "is a file; pass a folder"),
        ([scenes[0]], huge / "sub", "lies under the file"),
    ]
    for images, where, fragment in cases:
        _refused(_run(exe, cached_bundle(), *images, "--out", where, check=False), fragment)
        assert not out.exists()


@pytest.mark.parametrize("case", ["a file", "a read-only folder", "a path under a file", "under read-only"])
def test_cpp_build_refuses_an_unusable_out_in_one_line(export_cli, tmp_path, monkeypatch, case):
    """`zeroseg-export cpp-build --out` gave tracebacks (NotADirectoryError, PermissionError on the
    lock, FileExistsError); now `check_out_folder` refuses each in one line before the build (which
    must not start: `build_once` fails loudly). Read-only is `chattr +i` where allowed (root ignores
    permission bits), else simulated by making `os.access` deny writes to that folder."""
    import os
    import shutil
    import subprocess

    from helpers import assert_one_line_error

    from zeroseg.export.aoti import cpp_build

    def forbidden(*args, **kwargs):
        raise AssertionError("the build started")

    monkeypatch.setattr(cpp_build, "build_once", forbidden)
    blocker = tmp_path / "blocker"
    locked = False
    if "file" in case:
        blocker.write_text("not a folder")
    else:
        blocker.mkdir()
        chattr = shutil.which("chattr")
        locked = chattr is not None and subprocess.run([chattr, "+i", str(blocker)]).returncode == 0
        if not locked:
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **k: p != blocker and real(p, mode, **k))
    out = blocker if case in ("a file", "a read-only folder") else blocker / "build"
    try:
        res = export_cli("cpp-build", "--out", out)
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(blocker)], check=True)
    expect = {
        "a file": "is a file",
        "a read-only folder": "not writable",
        "a path under a file": "is a file, not a folder",
        "under read-only": "not writable",
    }[case]
    assert_one_line_error(res, f"--out {out}", expect)
