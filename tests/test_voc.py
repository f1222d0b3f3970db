"""VOC-layout reader: palette / grey / 16-bit masks, class files and built-in sets, one-line errors."""

import numpy as np
import pytest
from PIL import Image

from zeroseg.classes import BUILTIN_CLASS_SETS, load_classes, read_class_file
from zeroseg.data.voc import VOCDataset, read_mask
from zeroseg.errors import ZerosegError
from zeroseg.infer.visualize import save_label_png


def _make_voc(root, ids=("a", "b"), classes="background\nred, crimson\ngreen\n", image_suffix=".jpg"):
    """A tiny VOC folder: item 'a' has a palette mask, 'b' a grey (L) mask."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = {}
    for k, item in enumerate(ids):
        Image.fromarray(rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{item}{image_suffix}"
        )
        mask = rng.integers(0, 3, size=(6, 9))
        mask[0, 0] = 255
        if k % 2 == 0:
            save_label_png(root / "SegmentationClass" / f"{item}.png", mask)
        else:
            Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "SegmentationClass" / f"{item}.png")
        masks[item] = mask
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n\n")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return masks


def test_reads_images_masks_and_classes(tmp_path):
    masks = _make_voc(tmp_path)
    ds = VOCDataset(tmp_path)
    assert len(ds) == 2 and ds.ids == ["a", "b"]
    assert ds.class_names == ["background", "red", "green"]
    assert ds.class_synonyms[1] == ["red", "crimson"]
    assert ds.num_classes == 3 and ds.has_background
    for image, mask, item in ds:
        assert image.mode == "RGB" and image.size == (9, 6)
        assert mask.dtype == np.int64
        np.testing.assert_array_equal(mask, masks[item])  # palette PNG read as indices, not colours
    assert ds[-1][2] == "b"
    with pytest.raises(IndexError):
        ds[2]


def test_png_images_reduce_zero_label_and_builtin_classes(tmp_path):
    masks = _make_voc(tmp_path, classes=None, image_suffix=".png")
    ds = VOCDataset(tmp_path, classes_file="voc21", reduce_zero_label=True)
    assert ds.num_classes == 21 and ds.class_names[15] == "person"
    _, mask, item = ds[0]
    expected = np.where(masks[item] == 0, 255, masks[item] - 1)
    expected[masks[item] == 255] = 255
    np.testing.assert_array_equal(mask, expected)


def test_builtin_class_sets():
    sizes = {"voc21": 21, "voc20": 20, "context59": 59, "context60": 60, "coco_object": 81}
    for name, n in sizes.items():
        classes = load_classes(name)
        assert len(classes) == n
        names = [c[0] for c in classes]
        assert len(set(names)) == n
        assert (names[0] == "background") == (n in (21, 60, 81))
    assert load_classes("COCO-Object")[1][0] == "person"
    assert "table" in BUILTIN_CLASS_SETS["voc21"][11]  # "dining table, table"
    assert "bed" not in BUILTIN_CLASS_SETS["coco_object"][0]  # bed is a COCO class, not background


def test_class_file_parsing(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\ufeffbackground\n\n# a comment\nred ,  crimson\n  green\n", encoding="utf-8")
    assert read_class_file(path) == [["background"], ["red", "crimson"], ["green"]]
    assert load_classes(path) == read_class_file(path)
    path.write_text("red\nRed\n")
    with pytest.raises(ZerosegError, match="listed twice"):
        read_class_file(path)
    path.write_text("\n\n")
    with pytest.raises(ZerosegError, match="no class names"):
        read_class_file(path)
    with pytest.raises(ZerosegError, match="voc21"):
        load_classes(tmp_path / "nope.txt")


def test_read_mask_modes(tmp_path):
    Image.new("RGB", (3, 2), (1, 2, 3)).save(tmp_path / "rgb.png")
    with pytest.raises(ZerosegError, match="palette or greyscale"):
        read_mask(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ZerosegError, match="not a readable mask"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(ZerosegError, match="not found"):
        read_mask(tmp_path / "missing.png")


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_errors_are_one_line(tmp_path):
    with pytest.raises(ZerosegError) as e:
        VOCDataset(tmp_path / "missing")
    assert "not found" in _one_line(e)

    _make_voc(tmp_path / "d")
    root = tmp_path / "d"
    with pytest.raises(ZerosegError) as e:
        VOCDataset(root, split="test")
    assert "found: val" in _one_line(e)

    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(ZerosegError) as e:
        VOCDataset(root)
    assert "no mask" in _one_line(e) and "b.png" in str(e.value)

    _make_voc(tmp_path / "e")
    (tmp_path / "e" / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(ZerosegError, match="image for id a"):
        VOCDataset(tmp_path / "e")

    _make_voc(tmp_path / "f", classes=None)
    with pytest.raises(ZerosegError) as e:
        VOCDataset(tmp_path / "f")
    assert "--classes voc21" in _one_line(e)
    with pytest.raises(ZerosegError, match="class file not found"):
        VOCDataset(tmp_path / "f", classes_file=tmp_path / "nope.txt")

    _make_voc(tmp_path / "g")
    (tmp_path / "g" / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(ZerosegError, match="lists no image ids"):
        VOCDataset(tmp_path / "g")

    _make_voc(tmp_path / "h")
    save_label_png(tmp_path / "h" / "SegmentationClass" / "a.png", np.zeros((5, 9), int))
    with pytest.raises(ZerosegError, match="must match"):
        VOCDataset(tmp_path / "h")[0]

    (tmp_path / "i").mkdir()
    with pytest.raises(ZerosegError, match="JPEGImages"):
        VOCDataset(tmp_path / "i")
