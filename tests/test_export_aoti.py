"""`zeroseg-export aoti` and `AOTISegmenter`: the gate, parity with zeroseg.Segmenter, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from aoti_cache import LABELS, SHORT_SIDE, cached_bundle
from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.export.aoti.compile import PORTABLE_OPTIONS, describe_inductor, inductor_options
from zeroseg.export.aoti.export import AOTI_FORMAT, AotiSettings, export_aoti, static_size
from zeroseg.export.core.manifest import read_manifest
from zeroseg.export.core.vocab import read_vocab_bin

pytestmark = pytest.mark.slow  # compiling the shared AOTInductor package: ~70 s uncached


@pytest.fixture(scope="session")
def bundle():
    return cached_bundle()


@pytest.fixture(scope="session")
def runner(bundle):
    from zeroseg.export.aoti.runtime import AOTISegmenter

    return AOTISegmenter(bundle)


@pytest.fixture(scope="session")
def eager():
    import zeroseg

    return zeroseg.Segmenter.from_checkpoint(
        zeroseg.bundled_checkpoint(), short_side=SHORT_SIDE, head="paper"
    )


def _scenes(n: int, size: int = 128, seed: int = 11) -> list[Image.Image]:
    from zeroseg.data.scenes import generate_scene

    return [Image.fromarray(generate_scene(seed, size, index=i).image) for i in range(n)]


def test_manifest_records_gate_and_inductor_settings(bundle):
    m = read_manifest(bundle, fmt=AOTI_FORMAT)
    assert m.format == AOTI_FORMAT and m.parity["segmenter"]["pixel_agreement"] >= 0.999
    assert m.parity["images"] == 8  # the ONNX gate's cases, incl. batch 4, odd sizes, one patch
    ind = m.exporter["inductor"]
    assert ind["options"] == {"freezing": True, **PORTABLE_OPTIONS} and ind["portable"]
    assert ind["march_flags"] == ["-march=x86-64-v3"] and ind["vec_isa"] == "avx2" and ind["dynamic_threads"]
    assert m.exporter["dynamic"] and m.exporter["static_input"] is None
    assert set(m.files) == {"segmenter.pt2", "text_encoder.pt", "vocab.npz", "vocab.bin"}
    emb, offset = read_vocab_bin(bundle / "vocab.bin")
    space = m.vocab["label_space"]
    assert offset == space["label_offset"] and emb.shape == (space["rows"], space["dim"])
    assert space["names"] == ["background", *(e[0] for e in LABELS)]


def test_inductor_option_names_exist():
    import torch._inductor.config as config

    for name, value in inductor_options(True).items():
        with config.patch({name: value}):  # an unknown name raises
            pass
    host = describe_inductor(inductor_options(False))
    assert host["march_flags"] == ["-march=native"] and host["threads"] == torch.get_num_threads()
    assert static_size(256, 8) == (256, 344)


def test_matches_segmenter_mixed_batch(runner, eager):
    images = [*_scenes(3), _scenes(1, 96, seed=5)[0].resize((120, 77))]
    classes = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    want = eager(images, classes, batch_size=2)
    got = runner(images, classes, batch_size=2)
    agree = sum(int((g.labels == w.labels).sum()) for g, w in zip(got, want, strict=True))
    assert agree / sum(w.labels.size for w in want) >= 0.999
    for g, w, img in zip(got, want, images, strict=True):
        assert g.labels.shape == (img.height, img.width) and g.labels.dtype == np.int32
        assert g.class_names == w.class_names
    # a new vocabulary (not in vocab.bin) through the bundle's text tower; background not prompted
    got = runner(images[:1], "red; blue", bg_prompt=False, bg_thresh=0.3)
    want = eager(images[:1], "red; blue", bg_prompt=False, bg_thresh=0.3)
    assert (got[0].labels == want[0].labels).mean() >= 0.999


def test_static_package_refuses_other_sizes(runner, monkeypatch):
    monkeypatch.setattr(runner, "static_size", (128, 168))
    with pytest.raises(ZerosegError, match=r"static at 128x168 .*re-export with --dynamic"):
        runner(_scenes(1), ["red"])


def test_tampered_package_and_manifest_refused(bundle, tmp_path):
    from zeroseg.export.aoti.runtime import AOTISegmenter

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    with open(copy / "segmenter.pt2", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ZerosegError, match="segmenter.pt2 does not match its sha256"):
        AOTISegmenter(copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["preprocess"]["short_side"] = 64
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ZerosegError, match="edited after export"):
        AOTISegmenter(copy)
    with pytest.raises(ZerosegError, match="not a zeroseg ONNX bundle manifest"):
        read_manifest(bundle)  # an AOTI bundle is not an ONNX one


@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign"])
def test_bad_checkpoint_is_one_line_and_leaves_nothing(tmp_path, kind):
    import zeroseg

    ckpt = tmp_path / "model.pt"
    if kind == "truncated":
        ckpt.write_bytes(zeroseg.bundled_checkpoint().read_bytes()[:5000])
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    out = tmp_path / "out"
    with pytest.raises(ZerosegError) as err:
        export_aoti(AotiSettings(checkpoint=ckpt, out=out, progress=False), log=lambda *_: None)
    assert "\n" not in str(err.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == (
        [] if kind == "missing" else ["model.pt"]
    )


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    import sys

    from zeroseg.export.cli import main

    monkeypatch.setattr(sys, "argv", ["zeroseg-export", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_cli_one_line_errors(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, err = _cli(monkeypatch, capsys, "aoti", "missing.pt", "--out", out)
    assert code == 2 and err.startswith("error: ") and "already exists; pass --force" in err
    code, err = _cli(monkeypatch, capsys, "aoti", tmp_path / "none.pt", "--out", tmp_path / "o2", "--dynamic")
    assert code == 2 and "checkpoint not found" in err and err.count("\n") == 1
