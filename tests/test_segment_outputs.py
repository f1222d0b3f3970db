"""`zeroseg segment`'s outputs and footprint: the label PNG format follows the class count, inputs and
unrelated files are never overwritten, memory stays flat in the number of images, the pixel limit."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, write_image
from PIL import Image

import zeroseg.infer.files
from zeroseg.cli import segment as segment_cli
from zeroseg.data.images import MAX_PIXELS
from zeroseg.errors import ZerosegError
from zeroseg.infer.labels import MAX_INFERENCE_SIDE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_label_png_format_follows_the_class_count(cli, world, tmp_path):
    images = [write_image(tmp_path / "in" / f"p{i}.png", seed=i) for i in range(2)]
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


# ---- streaming: memory flat in N -----------------------------------------------------------------


def _peak(cli, world, images: list[Path], out: Path) -> int:
    tracemalloc.start()
    try:
        result = cli("segment", world.checkpoint, *images, "--labels", "red,green", "--batch-size", "1",
                     "--out", out)  # fmt: skip
        assert result.code == 0, result.err
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_segment_memory_is_flat_in_the_number_of_images(cli, world, tmp_path):
    images = [write_image(tmp_path / "in" / f"img{i:02d}.png", 384, 512, seed=i) for i in range(20)]
    _peak(cli, world, images[:1], tmp_path / "warm")  # load caches once
    two = _peak(cli, world, images[:2], tmp_path / "two")
    twenty = _peak(cli, world, images, tmp_path / "twenty")
    per_image_labels = 384 * 512 * 4  # what keeping every result used to cost (labels alone)
    assert twenty - two < 3 * per_image_labels, (two, twenty)  # keeping 18 more would add 18x


def test_pixel_limit_is_documented_and_memory_is_checked(cli, world, tmp_path, monkeypatch):
    assert segment_cli.MAX_PIXELS == MAX_PIXELS and segment_cli.MAX_INFERENCE_SIDE == MAX_INFERENCE_SIDE
    helped = cli("segment", "--help")
    assert f"{MAX_PIXELS:,}" in helped.out.replace("\n", "") or "268,435,456" in helped.out
    guarantees = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text()
    assert "MAX_PIXELS" in guarantees and "2048" in guarantees  # the documented limits
    monkeypatch.setattr(zeroseg.infer.files, "available_memory", lambda: 64 * 2**20)
    image = write_image(tmp_path / "big.png", 300, 400)
    result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", tmp_path / "o")
    assert_one_line_error(result, "big.png", "400x300", "available")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_memory_guard_counts_the_images_in_a_batch_not_the_batch_size(cli, world, tmp_path, monkeypatch):
    """One 6000x4000 photo at the default --batch-size 8 was refused ("needs about 18.4 GiB") though it
    runs in 2.65 GiB: every image was counted batch-size times. The estimate now sums the images a
    batch really holds; scaled down here to memory for about two 400x300 images."""
    files = zeroseg.infer.files
    monkeypatch.setattr(files, "available_memory", lambda: 3 * 2**30)
    files.check_batches_memory(["photo.jpg"], [(4000, 6000)], 8)  # the reported case: ~2.7 GiB, fits
    with pytest.raises(ZerosegError, match="lower --batch-size"):
        files.check_batches_memory(["a.jpg", "b.jpg"], [(4000, 6000)] * 2, 8)  # two of them do not
    per_image = files.BYTES_PER_PIXEL * 300 * 400
    monkeypatch.setattr(files, "available_memory", lambda: files.BASE_BYTES + int(2.5 * per_image))
    images = [write_image(tmp_path / "in" / f"p{i}.png", 300, 400, seed=i) for i in range(3)]
    result = cli("segment", world.checkpoint, images[0], "--labels", "red", "--out", tmp_path / "one")
    assert result.code == 0, result.err  # one image at the default --batch-size 8
    result = cli("segment", world.checkpoint, *images, "--labels", "red", "--out", tmp_path / "three")
    assert_one_line_error(result, "p0.png", "lower --batch-size", "available")
    result = cli("segment", world.checkpoint, *images, "--labels", "red", "--batch-size", "2",
                 "--out", tmp_path / "pairs")  # fmt: skip
    assert result.code == 0, result.err


# ---- overwriting ---------------------------------------------------------------------------------


def test_segment_never_overwrites_an_input_or_unrelated_files(cli, world, tmp_path):
    u = tmp_path / "u"
    x = write_image(u / "x.png", seed=1)
    x_labels = write_image(u / "x_labels.png", seed=2)  # an input that x.png's label map would replace
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
    cat = write_image(tmp_path / "cat.png", seed=3)
    assert_one_line_error(
        cli("segment", world.checkpoint, cat, "--labels", "red", "--out", out), "--overwrite"
    )
    assert mine.read_bytes() == b"the user's own file" and sorted(os.listdir(out)) == ["cat_overlay.png"]
    result = cli("segment", world.checkpoint, cat, "--labels", "red", "--out", out, "--overwrite")
    assert result.code == 0, result.err
    assert mine.read_bytes() != b"the user's own file"
    assert "--overwrite" in cli("segment", "--help").out
