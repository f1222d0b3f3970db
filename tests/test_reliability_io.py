"""Issue 13 (reliability), the inference / file findings: each test is named after its finding and
reproduces the command's situation through the `zeroseg` entry point."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error
from PIL import Image

import zeroseg.infer.files
from zeroseg.checkpoint import load_checkpoint
from zeroseg.cli import segment as segment_cli
from zeroseg.data.images import MAX_PIXELS
from zeroseg.errors import ZerosegError
from zeroseg.infer.labels import MAX_INFERENCE_SIDE
from zeroseg.infer.visualize import label_ids_from_png, label_image, save_overlay
from zeroseg.shapeworld.bundled import bundled_checkpoint
from zeroseg.shapeworld.write import write_scenes
from zeroseg.utils.atomic import atomic_path

pytestmark = pytest.mark.usefixtures("one_thread")

#: a place no process may write (read-only for root too): mkdir there fails
READ_ONLY = Path("/sys/zeroseg-reliability-test")
needs_read_only = pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys")


def _image(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel_voc")
    write_scenes(root / "voc", n=4, seed=2, size=64, val_fraction=0.5)
    return root / "voc"


# ---- finding 4: unwritable outputs -----------------------------------------------------------------


def test_finding_04_unwritable_outputs_are_one_line_before_the_compute(
    cli, world, voc, tmp_path, monkeypatch
):
    image = _image(tmp_path / "x.png")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    built = []
    monkeypatch.setattr(
        zeroseg.infer.files, "open_rgb", lambda p: built.append(p) or Image.open(p).convert("RGB")
    )
    result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", afile / "sub")
    assert_one_line_error(result, "--out", str(afile / "sub"))
    result = cli("eval", world.checkpoint, "--dataset", voc, "--json", afile / "x.json", "-q")
    assert_one_line_error(result, "--json")
    if READ_ONLY.parent.is_dir():
        result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", READ_ONLY)
        assert_one_line_error(result, "--out", "not writable")
    assert not built  # nothing was decoded or segmented


@needs_read_only
def test_finding_04_read_only_file_system(cli, world, tmp_path):
    assert_one_line_error(cli("synth", "--out", READ_ONLY, "--n", "2", "-q"), "--out", "not writable")
    result = cli("pretrain-teacher", "--out", READ_ONLY / "t.pt", "--steps", "1", "-q")
    assert_one_line_error(result, "--out", "not writable")
    result = cli(
        "cache-teacher", "--data", tmp_path, "--teacher", world.root / "teacher.pt", "--out", READ_ONLY
    )
    assert_one_line_error(result, "--out", "not writable")


def test_finding_04_atomic_cleanup_keeps_the_original_error(tmp_path, monkeypatch):
    real_unlink = Path.unlink

    def read_only_unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise OSError(30, "Read-only file system")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(ValueError, match="the body's own error"), atomic_path(tmp_path / "out.json"):
        raise ValueError("the body's own error")
    with pytest.raises(ZerosegError, match="cannot write"), atomic_path(tmp_path / "f.bin") as tmp:
        raise OSError(28, "No space left on device", str(tmp))


# ---- finding 5: one device resolver --------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_finding_05_bad_device_is_one_line(cli, world, voc, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    image = _image(tmp_path / "x.png")
    common = ("--device", device)
    assert_one_line_error(cli("segment", world.checkpoint, image, "--labels", "red", *common), "--device")
    result = cli("segment", image, "--method", "maskclip", "--teacher", world.root / "teacher.pt",
                 "--labels", "red", "--out", tmp_path / "m", *common)  # fmt: skip
    assert_one_line_error(result, "--device")
    assert_one_line_error(cli("eval", world.checkpoint, "--dataset", voc, "-q", *common), "--device")
    assert_one_line_error(cli("demo", "--out", tmp_path / "d", *common), "--device")


# ---- finding 6: label 255 and the PNG format -----------------------------------------------------


def test_finding_06_label_png_format_follows_the_class_count(cli, world, tmp_path):
    images = [_image(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(2)]
    many = [f"thing {i}" for i in range(254)] + ["red"]  # red is label 255
    out = tmp_path / "out"
    result = cli(
        "segment", world.checkpoint, *images, "--labels", ",".join(many), "--bg-thresh", "0", "--out", out
    )
    assert result.code == 0, result.err
    for image in images:
        with Image.open(out / f"{image.stem}_labels.png") as png:
            assert png.mode in ("I;16", "I"), png.mode  # every image of the run: 16-bit
            values = np.asarray(png).astype(np.int64)
        assert 255 not in values  # never the VOC ignore value
    few = ",".join(many[:10])
    result = cli("segment", world.checkpoint, *images, "--labels", few, "--out", tmp_path / "few")
    assert result.code == 0, result.err
    for image in images:
        with Image.open(tmp_path / "few" / f"{image.stem}_labels.png") as png:
            assert png.mode == "P"


def test_finding_06_class_255_is_stored_coloured_and_listed(tmp_path):
    labels = np.array([[0, 255], [254, 300]], dtype=np.int32)
    png = label_image(labels, num_labels=301)
    stored = np.asarray(png).astype(np.int64)
    assert png.mode in ("I;16", "I") and 255 not in stored
    assert (label_ids_from_png(stored) == labels).all()
    small = label_image(np.array([[0, 1]], dtype=np.int32), num_labels=301)
    assert small.mode in ("I;16", "I")  # the run's format, not the image's labels
    assert label_image(np.array([[0, 254]]), num_labels=255).mode == "P"
    with pytest.raises(ZerosegError):
        label_image(np.array([[255]]), num_labels=255)
    names = ["background", *[f"c{i}" for i in range(1, 255)], "red"]
    image = Image.new("RGB", (4, 4), (128, 128, 128))
    red = np.full((4, 4), 255, dtype=np.int32)
    save_overlay(tmp_path / "o.png", image, red, names, ignore_index=-1)
    assert np.asarray(Image.open(tmp_path / "o.png"))[3, 3].tolist() != [128, 128, 128]


# ---- finding 7: streaming, memory flat in N ------------------------------------------------------


def _peak(cli, world, images: list[Path], out: Path) -> int:
    tracemalloc.start()
    try:
        result = cli("segment", world.checkpoint, *images, "--labels", "red,green", "--batch-size", "1",
                     "--out", out)  # fmt: skip
        assert result.code == 0, result.err
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_finding_07_segment_memory_is_flat_in_the_number_of_images(cli, world, tmp_path):
    images = [_image(tmp_path / "in" / f"img{i:02d}.png", 384, 512, seed=i) for i in range(20)]
    _peak(cli, world, images[:1], tmp_path / "warm")  # load caches once
    two = _peak(cli, world, images[:2], tmp_path / "two")
    twenty = _peak(cli, world, images, tmp_path / "twenty")
    per_image_labels = 384 * 512 * 4  # what keeping every result used to cost (labels alone)
    assert twenty - two < 3 * per_image_labels, (two, twenty)  # keeping 18 more would add 18x


def test_finding_07_pixel_limit_is_documented_and_memory_is_checked(cli, world, tmp_path, monkeypatch):
    assert segment_cli.MAX_PIXELS == MAX_PIXELS and segment_cli.MAX_INFERENCE_SIDE == MAX_INFERENCE_SIDE
    helped = cli("segment", "--help")
    assert f"{MAX_PIXELS:,}" in helped.out.replace("\n", "") or "268,435,456" in helped.out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "MAX_PIXELS" in readme and "2048" in readme
    monkeypatch.setattr(zeroseg.infer.files, "available_memory", lambda: 64 * 2**20)
    image = _image(tmp_path / "big.png", 300, 400)
    result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", tmp_path / "o")
    assert_one_line_error(result, "big.png", "400x300", "available")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---- finding 8: overwriting ----------------------------------------------------------------------


def test_finding_08_segment_never_overwrites_an_input_or_unrelated_files(cli, world, tmp_path):
    u = tmp_path / "u"
    x = _image(u / "x.png", seed=1)
    x_labels = _image(u / "x_labels.png", seed=2)  # an input that x.png's label map would replace
    before = x_labels.read_bytes()
    result = cli("segment", world.checkpoint, x, x_labels, "--labels", "red,green", "--out", u)
    assert_one_line_error(result, "overwrite the input", "x_labels.png")
    result = cli("segment", world.checkpoint, x, x_labels, "--labels", "red", "--out", u, "--overwrite")
    assert_one_line_error(result, "overwrite the input")
    assert x_labels.read_bytes() == before
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "cat_overlay.png"
    mine.write_bytes(b"the user's own file")
    cat = _image(tmp_path / "cat.png", seed=3)
    assert_one_line_error(
        cli("segment", world.checkpoint, cat, "--labels", "red", "--out", out), "--overwrite"
    )
    assert mine.read_bytes() == b"the user's own file" and sorted(os.listdir(out)) == ["cat_overlay.png"]
    result = cli("segment", world.checkpoint, cat, "--labels", "red", "--out", out, "--overwrite")
    assert result.code == 0, result.err
    assert mine.read_bytes() != b"the user's own file"
    assert "--overwrite" in cli("segment", "--help").out


# ---- finding 9: eval with background not first ---------------------------------------------------


def test_finding_09_eval_refuses_background_not_first(cli, world, voc):
    classes = (voc / "classes.txt").read_text().split()
    assert classes[0] == "background"
    moved = voc.parent / "moved_classes.txt"
    moved.write_text("\n".join([*classes[1:], "background"]) + "\n")
    result = cli("eval", world.checkpoint, "--dataset", voc, "--classes", moved, "-q")
    assert_one_line_error(result, "background", "first")
    missing = voc.parent / "no_background.txt"
    missing.write_text("\n".join(classes[1:]) + "\n")
    result = cli("eval", world.checkpoint, "--dataset", voc, "--classes", missing, "-q")
    assert result.code == 0 and "warning:" in result.err and "label 0" in result.err


# ---- finding 15: checksums -----------------------------------------------------------------------


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch zip (its CRC is not checked)."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = (
        int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_finding_15_flipped_tensor_bytes_are_refused(cli, world, tmp_path):
    damaged = tmp_path / "flipped.pt"
    damaged.write_bytes(world.checkpoint.read_bytes())
    _flip_tensor_byte(damaged)
    with pytest.raises(ZerosegError, match="checksum"):
        load_checkpoint(damaged)
    image = _image(tmp_path / "x.png")
    result = cli("segment", damaged, image, "--labels", "red", "--out", tmp_path / "o")
    assert_one_line_error(result, str(damaged), "checksum")
    # the bundled checkpoint carries one and passes it; an old checkpoint without one still loads
    raw = torch.load(bundled_checkpoint(), weights_only=True)
    assert raw["checksum"]["algorithm"] == "sha256" and len(raw["checksum"]["hex"]) == 64
    load_checkpoint(bundled_checkpoint())
    old = {k: v for k, v in torch.load(world.checkpoint, weights_only=True).items() if k != "checksum"}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").student.keys() == world.student_state.keys()
