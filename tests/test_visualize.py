"""Label PNGs (palette and 16-bit), the VOC palette, overlays with a legend, label fractions."""

import numpy as np
import pytest
from PIL import Image

from zeroseg.data.voc import read_mask
from zeroseg.errors import ZerosegError
from zeroseg.infer.visualize import (
    label_fractions,
    label_ids_from_png,
    label_image,
    overlay,
    save_label_png,
    save_overlay,
    voc_palette,
)


def test_voc_palette_known_entries():
    pal = voc_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:6].tolist() == [
        [0, 0, 0],
        [128, 0, 0],
        [0, 128, 0],
        [128, 128, 0],
        [0, 0, 128],
        [128, 0, 128],
    ]
    assert pal[15].tolist() == [192, 128, 128]  # VOC "person"
    assert pal[255].tolist() == [224, 224, 192]  # VOC border / ignore colour
    assert len({tuple(c) for c in pal.tolist()}) == 256
    big = voc_palette(300)
    assert big.shape == (300, 3) and np.array_equal(big[:256], pal)


def test_palette_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 21, size=(31, 17))
    labels[0, :5] = 255
    path = tmp_path / "m.png"
    save_label_png(path, labels)
    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (17, 31)
        np.testing.assert_array_equal(np.asarray(img), labels)
        stored = np.array(img.getpalette()[: 256 * 3]).reshape(256, 3)
    np.testing.assert_array_equal(stored, voc_palette(256))
    np.testing.assert_array_equal(read_mask(path), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # atomic: no temp file left


def test_custom_palette_and_16bit_png(tmp_path):
    labels = np.array([[0, 1], [2, 1]])
    save_label_png(tmp_path / "c.png", labels, palette=[(10, 20, 30), (40, 50, 60)])
    with Image.open(tmp_path / "c.png") as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [40, 50, 60]
    assert rgb[1, 0].tolist() == voc_palette(3)[2].tolist()  # entries not given fall back to VOC

    many = np.arange(7 * 9).reshape(7, 9) * 97  # up to 6014 > 255: 16-bit grey
    save_label_png(tmp_path / "w.png", many)
    with Image.open(tmp_path / "w.png") as img:
        assert img.mode.startswith("I")
    np.testing.assert_array_equal(read_mask(tmp_path / "w.png"), many)


def test_label_png_rejects_bad_labels(tmp_path):
    with pytest.raises(ZerosegError, match="0..65535"):
        save_label_png(tmp_path / "x.png", np.array([[-1, 0]]))
    with pytest.raises(ZerosegError, match="2-D"):
        save_label_png(tmp_path / "x.png", np.zeros((2, 2, 3), int))
    with pytest.raises(ZerosegError, match="integers"):
        save_label_png(tmp_path / "x.png", np.zeros((2, 2)))
    assert not list(tmp_path.iterdir())


@pytest.mark.usefixtures("one_thread")
def test_class_255_is_stored_coloured_and_listed(tmp_path):
    """With more than 255 labels the PNG is 16-bit (255 is never the VOC ignore value) for the whole
    run, and an overlay colours label 255."""
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


@pytest.mark.parametrize("size", [(37, 23), (5, 3), (1, 1), (301, 17)])
def test_overlay_keeps_image_size(size):
    w, h = size
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    labels = rng.integers(0, 4, size=(h, w))
    out = overlay(image, labels, ["background", "red", "green", "blue"])
    assert out.size == (w, h) and out.mode == "RGB"


def test_overlay_blending_and_ignore():
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    labels = np.zeros((30, 40), int)
    labels[:, 20:] = 1
    labels[0, 0] = 255
    names = ["background", "thing"]
    same = np.asarray(overlay(image, labels, names, alpha=0.0, legend=False))
    assert (same == 100).all()
    full = np.asarray(
        overlay(image, labels, names, palette=[(0, 0, 0), (200, 0, 50)], alpha=1.0, legend=False)
    )
    assert full[5, 30].tolist() == [200, 0, 50] and full[5, 5].tolist() == [0, 0, 0]
    assert full[0, 0].tolist() == [100, 100, 100]  # ignore keeps the image
    big = Image.new("RGB", (200, 120), (100, 100, 100))
    with_legend = np.asarray(overlay(big, np.zeros((120, 200), int), names, alpha=0.0))
    assert (with_legend[:8, :8] != 100).any()  # legend drawn in the top-left corner
    assert (with_legend[40:, 120:] == 100).all()


def test_overlay_errors(tmp_path):
    image = Image.new("RGB", (4, 3))
    with pytest.raises(ZerosegError, match="does not match"):
        overlay(image, np.zeros((4, 3), int), ["a"])
    with pytest.raises(ZerosegError, match="alpha"):
        overlay(image, np.zeros((3, 4), int), ["a"], alpha=2.0)
    with pytest.raises(ZerosegError, match="unknown image format"):
        save_overlay(tmp_path / "o.xyz", image, np.zeros((3, 4), int), ["a"])


def test_save_overlay(tmp_path):
    image = Image.new("RGB", (33, 21), (50, 60, 70))
    labels = np.zeros((21, 33), int)
    labels[5:15, 5:25] = 2
    for name in ("o.png", "o.jpg"):
        save_overlay(tmp_path / name, image, labels, ["background", "a", "b"])
        with Image.open(tmp_path / name) as img:
            assert img.size == (33, 21)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jpg", "o.png"]


def test_label_fractions():
    labels = np.array([[0, 0, 0, 1], [1, 2, 255, 0]])
    fr = label_fractions(labels, ["background", "red", "green"])
    assert list(fr) == ["background", "red", "green", "ignore"]  # largest first
    assert fr["background"] == pytest.approx(4 / 8) and fr["red"] == pytest.approx(2 / 8)
    assert sum(fr.values()) == pytest.approx(1.0)
    assert "class 7" in label_fractions(np.array([[7]]), ["a"])
