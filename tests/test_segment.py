"""`zeroseg segment` end to end (outputs for every image mode and size, refusals) and the Segmenter API."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import SHORT_SIDE, assert_one_line_error, make_config
from PIL import Image, ImageOps
from typer.testing import CliRunner

import zeroseg.data.images
from zeroseg.checkpoint import load_checkpoint, save_checkpoint
from zeroseg.cli import app
from zeroseg.data.images import open_rgb
from zeroseg.errors import ZerosegError
from zeroseg.infer.segmenter import LabelSpace, Segmenter
from zeroseg.infer.visualize import label_ids_from_png

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = "cat,dog|puppy,traffic light"
NAMES = ["background", "cat", "dog", "traffic light"]
API_CLASSES = [["cat"], ["dog", "puppy"], ["traffic light"]]  # LABELS as the Python API takes it


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random picture (blocks + gradient), so JPEG round trips stay close."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def _exif_rotated_jpeg(path: Path, arr: np.ndarray) -> None:
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation 6: rotate 90 degrees clockwise to display
    img.save(path, quality=95, exif=exif)


def _make_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Images of every mode under `folder`; returns file name -> expected output size (W, H)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _rgb(53, 37, 0)  # odd, non-square: 37 wide, 53 tall
    sizes: dict[str, tuple[int, int]] = {}

    def save(name: str, img: Image.Image, **kw) -> None:
        img.save(folder / name, **kw)
        sizes[name] = img.size

    save("odd_rgb.png", Image.fromarray(rgb))
    save("wide.png", Image.fromarray(_rgb(40, 97, 1)))
    save("thin.png", Image.fromarray(_rgb(1, 300, 4)))  # extreme aspect: the longer side gets capped
    save("dot.png", Image.fromarray(_rgb(1, 1, 5)))
    save("grey_L.png", Image.fromarray(rgb).convert("L"))
    save("grey_alpha_LA.png", Image.fromarray(rgb).convert("LA"))
    save("palette_P.png", Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16))
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    save("palette_transparent.png", pal, transparency=3)
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2])])
    save("alpha_RGBA.png", Image.fromarray(rgba.astype(np.uint8)))
    deep = (np.arange(53 * 37, dtype=np.uint32).reshape(53, 37) * 33).astype(np.uint16)  # 0..64713
    save("deep_I16.png", Image.fromarray(deep))
    save("print_CMYK.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    _exif_rotated_jpeg(folder / "rotated_exif.jpg", rgb)
    sizes["rotated_exif.jpg"] = (53, 37)  # displayed size: width and height swap
    for name, mode in (("grey_L.png", "L"), ("grey_alpha_LA.png", "LA"), ("palette_P.png", "P")):
        assert Image.open(folder / name).mode == mode
    assert Image.open(folder / "deep_I16.png").mode in ("I;16", "I")
    assert Image.open(folder / "print_CMYK.jpg").mode == "CMYK"
    assert Image.open(folder / "alpha_RGBA.png").mode == "RGBA"
    return sizes


@pytest.fixture(scope="module")
def segmented(world, tmp_path_factory):
    """One `zeroseg segment` run over images of every mode; (input folder, out folder, sizes, output)."""
    root = tmp_path_factory.mktemp("segment")
    sizes = _make_inputs(root / "in")
    out = root / "out"
    args = ["segment", str(world.checkpoint), *(str(root / "in" / n) for n in sizes)]
    result = CliRunner().invoke(app, [*args, "--labels", LABELS, "--bg-thresh", "0.3", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return root / "in", out, sizes, result.output


@pytest.fixture(scope="module")
def segmenter(world):
    return Segmenter(world.checkpoint)


def read_labels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# `zeroseg segment`: outputs


@pytest.mark.parametrize(
    "name",
    [
        "odd_rgb.png",
        "wide.png",
        "thin.png",
        "dot.png",
        "grey_L.png",
        "grey_alpha_LA.png",
        "palette_P.png",
        "palette_transparent.png",
        "alpha_RGBA.png",
        "deep_I16.png",
        "print_CMYK.jpg",
        "rotated_exif.jpg",
    ],
)
def test_segment_writes_labels_overlay_and_json(segmented, segmenter, name):
    folder, out, sizes, _ = segmented
    stem = Path(name).stem
    width, height = sizes[name]
    with Image.open(out / f"{stem}_labels.png") as img:
        assert img.format == "PNG" and img.mode == "P" and img.size == (width, height)
    labels = read_labels(out / f"{stem}_labels.png")
    assert labels.min() >= 0 and labels.max() < len(NAMES)
    with Image.open(out / f"{stem}_overlay.png") as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (width, height)
    info = json.loads((out / f"{stem}.json").read_text())
    assert info["class_names"] == NAMES
    assert info["size"] == [width, height]
    assert Path(info["image"]).name == name and info["method"] == "zeroseg"
    assert set(info["fractions"]) <= set(NAMES)
    assert math.isclose(sum(info["fractions"].values()), 1.0, abs_tol=1e-6)
    counts = np.bincount(labels.ravel(), minlength=len(NAMES)) / labels.size
    assert info["fractions"] == pytest.approx({NAMES[i]: c for i, c in enumerate(counts) if c > 0})
    # the CLI writes exactly what the Python API computes for the same file
    (api,) = segmenter([folder / name], API_CLASSES, bg_thresh=0.3)
    np.testing.assert_array_equal(api.labels, labels)


def test_image_modes_decode_to_the_pictures_they_hold(segmented):
    """What the model sees: upright 8-bit RGB of the same picture, whatever the file's mode."""
    folder, _, _, _ = segmented
    rgb = _rgb(53, 37, 0)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(np.asarray(open_rgb(folder / "odd_rgb.png")), rgb)
    np.testing.assert_array_equal(np.asarray(open_rgb(folder / "grey_L.png")), np.dstack([grey] * 3))
    cmyk = np.asarray(open_rgb(folder / "print_CMYK.jpg")).astype(int)
    assert np.abs(cmyk - rgb).mean() < 3  # not inverted or channel-swapped
    deep = np.asarray(open_rgb(folder / "deep_I16.png"))
    assert deep[0, 0].tolist() == [0, 0, 0] and deep[-1, -1].tolist() == [255, 255, 255]  # full range
    alpha = np.asarray(open_rgb(folder / "alpha_RGBA.png")).astype(int)
    assert alpha[0, 0].tolist() == [255, 255, 255]  # alpha 0 there: composited onto white
    np.testing.assert_allclose(alpha[-1, -1], rgb[-1, -1], atol=1)  # alpha 255: the colour itself
    rotated = np.asarray(open_rgb(folder / "rotated_exif.jpg")).astype(int)
    assert rotated.shape == (37, 53, 3)
    assert np.abs(rotated - np.rot90(rgb, k=-1)).mean() < 3  # orientation 6: 90 degrees clockwise


def test_segment_writes_three_files_per_image_and_nothing_else(segmented):
    _, out, sizes, output = segmented
    suffixes = ("_labels.png", "_overlay.png", ".json")
    expected = {f"{Path(n).stem}{suffix}" for n in sizes for suffix in suffixes}
    assert {p.name for p in out.iterdir()} == expected  # no temp files left behind
    assert f"wrote {3 * len(sizes)} files" in output


def test_exif_orientation_rotates_the_pixels_not_only_the_size(segmented, segmenter, tmp_path):
    folder, out, _, _ = segmented
    upright = tmp_path / "upright.png"
    with Image.open(folder / "rotated_exif.jpg") as img:
        assert img.size == (37, 53)  # stored sideways
        ImageOps.exif_transpose(img).save(upright)  # same decoded pixels, no EXIF, lossless
    (want,) = segmenter([upright], API_CLASSES, bg_thresh=0.3)
    np.testing.assert_array_equal(read_labels(out / "rotated_exif_labels.png"), want.labels)


def test_more_than_255_classes_give_a_16_bit_label_png(world, segmenter, cli, tmp_path):
    image = tmp_path / "many.png"
    Image.fromarray(_rgb(45, 60, 7)).save(image)
    names = [f"made up thing {i}" for i in range(300)]
    # which classes does the model pick? Put exactly those last, so that their labels exceed 255
    (first,) = segmenter([image], names, bg_thresh=0.0)
    picked = [names[v - 1] for v in np.unique(first.labels)]
    order = [n for n in names if n not in picked] + picked
    out = tmp_path / "out"
    result = cli(
        "segment", world.checkpoint, image, "--labels", ",".join(order), "--bg-thresh", "0", "--out", out
    )
    assert result.code == 0, result.err
    with Image.open(out / "many_labels.png") as img:
        assert img.format == "PNG" and img.mode in ("I;16", "I") and img.size == (60, 45)
    labels = read_labels(out / "many_labels.png")
    assert labels.min() > 255  # every pixel got one of the re-ordered classes, past 8 bits
    info = json.loads((out / "many.json").read_text())
    assert info["class_names"] == ["background", *order]
    # the same pixels get the same class names as before the re-ordering
    by_name = np.array(info["class_names"], dtype=object)
    first_names = np.array(["background", *names], dtype=object)
    ids = label_ids_from_png(labels)  # 16-bit files store ids >= 255 as id + 1 (255 is never a class)
    assert (by_name[ids] == first_names[first.labels]).all()
    assert math.isclose(sum(info["fractions"].values()), 1.0, abs_tol=1e-6)
    assert set(info["fractions"]) == set(picked)
    with Image.open(out / "many_overlay.png") as img:
        assert img.size == (60, 45)


def test_labels_file_equals_labels_option(world, cli, tmp_path):
    image = tmp_path / "pic.png"
    Image.fromarray(_rgb(32, 48, 3)).save(image)
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\ncat\ndog, puppy\n\ntraffic light\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("segment", world.checkpoint, image, "--labels", LABELS, "--out", a).code == 0
    classes = tmp_path / "classes.txt"
    assert cli("segment", world.checkpoint, image, "--labels-file", classes, "--out", b).code == 0
    np.testing.assert_array_equal(read_labels(a / "pic_labels.png"), read_labels(b / "pic_labels.png"))
    assert json.loads((b / "pic.json").read_text())["class_names"] == NAMES


# ---------------------------------------------------------------------------------------------------
# `zeroseg segment`: refusals. Each is one line, exit status 2, and writes nothing.


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with (almost) no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture
def good_image(tmp_path) -> Path:
    path = tmp_path / "good.png"
    Image.fromarray(_rgb(30, 40, 5)).save(path)
    return path


def _refused(cli, world, tmp_path, images, *options, expect: str) -> None:
    out = tmp_path / "out"
    result = cli("segment", world.checkpoint, *images, *options, "--out", out)
    assert_one_line_error(result, expect)
    assert not out.exists(), sorted(out.rglob("*"))


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        (("--labels", ""), "no class names"),
        (("--labels", ",,"), "no class names"),
        (("--labels", " | , |"), "no class names"),
        (("--labels", "cat,cat"), "more than once"),
        (("--labels", "cat,dog,Cat"), "more than once"),
        (("--labels", "background"), "no foreground class"),
        (("--labels", "cat,background"), "list it first"),
        ((), "exactly one of"),
        (("--labels", "cat", "--labels-file", "x.txt"), "exactly one of"),
        (("--labels", "cat", "--bg-thresh", "1.5"), "[0, 1]"),
        (("--labels", "cat", "--bg-thresh", "-0.01"), "[0, 1]"),
        (("--labels", "cat", "--bg-thresh", "nan"), "[0, 1]"),
        (("--labels", "cat", "--short-side", "0"), "--short-side must be a positive integer"),
        (("--labels", "cat", "--batch-size", "0"), "--batch-size must be a positive integer"),
        (("--labels", "cat", "--threads", "-3"), "--threads must be a positive integer"),
        (("--labels", "cat", "--method", "magic"), "--method"),
    ],
)
def test_bad_options_are_refused(cli, world, tmp_path, good_image, options, expect):
    _refused(cli, world, tmp_path, [good_image], *options, expect=expect)


def test_missing_or_empty_labels_file(cli, world, tmp_path, good_image):
    _refused(cli, world, tmp_path, [good_image], "--labels-file", tmp_path / "nope.txt", expect="not found")
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    _refused(cli, world, tmp_path, [good_image], "--labels-file", tmp_path / "empty.txt", expect="no class")


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("text.jpg", b"this is a text file, not a photo\n", "not a readable image"),
        ("zero.png", _png_header_only(0, 0), "not a readable image"),
        ("half.png", None, "not a readable image"),
        ("half.jpg", None, "not a readable image"),
        ("missing.png", False, "image not found"),
    ],
)
def test_bad_image_is_refused_and_nothing_is_written(cli, world, tmp_path, good_image, name, content, expect):
    path = tmp_path / name
    if content is None:  # a truncated file: the first half of a real image
        full = tmp_path / f"full{path.suffix}"
        Image.fromarray(_rgb(60, 80, 9)).save(full)
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif content is not False:
        path.write_bytes(content)
    # the good image comes first: its outputs must not be written either
    _refused(cli, world, tmp_path, [good_image, path], "--labels", "cat,dog", expect=expect)


@pytest.mark.parametrize("size", [(40, 30), (200, 100)])
def test_too_large_image_is_refused(cli, world, tmp_path, good_image, monkeypatch, size):
    """Both just over the limit (PIL itself only warns below twice its limit) and far over it."""
    monkeypatch.setattr(zeroseg.data.images, "MAX_PIXELS", 1000)
    big = tmp_path / "big.png"
    Image.fromarray(_rgb(size[1], size[0], 2)).save(big)
    small = tmp_path / "small.png"
    Image.fromarray(_rgb(20, 30, 2)).save(small)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _refused(cli, world, tmp_path, [small, big], "--labels", "cat", expect="too large")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20_000, 20_000))  # 400 M pixels: between 1x and 2x the limit
    with pytest.raises(ZerosegError, match="too large"):
        open_rgb(path)


def test_out_is_a_file_or_stems_collide(cli, world, tmp_path, good_image):
    (tmp_path / "taken").write_text("x")
    result = cli("segment", world.checkpoint, good_image, "--labels", "cat", "--out", tmp_path / "taken")
    assert_one_line_error(result, "is a file")
    other = tmp_path / "sub" / "good.png"
    other.parent.mkdir()
    other.write_bytes(good_image.read_bytes())
    _refused(cli, world, tmp_path, [good_image, other], "--labels", "cat", expect="share a file name")


def test_console_script_exits_2_without_traceback(world, tmp_path):
    """The installed `zeroseg` script itself, in a fresh process."""
    script = Path(sys.executable).with_name("zeroseg")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(script), "segment", str(world.checkpoint), str(bad), "--labels", "cat,dog", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    message = f"error: not a readable image: {bad} (UnidentifiedImageError)"
    assert proc.stderr.strip().splitlines() == [message]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# The Segmenter API


def _images() -> list[Image.Image]:
    """Mixed sizes, with two pairs of equal network input size, so batches group and interleave."""
    shapes = [(53, 37), (64, 64), (37, 53), (40, 97), (66, 62), (53, 37)]
    return [Image.fromarray(_rgb(h, w, seed)) for seed, (h, w) in enumerate(shapes)]


def test_batched_mixed_sizes_keep_order_and_equal_single_calls(segmenter):
    images = _images()
    classes = API_CLASSES
    batched = segmenter(images, classes, bg_thresh=0.3, batch_size=2)
    assert len(batched) == len(images)
    for image, result in zip(images, batched, strict=True):
        assert result.labels.shape == (image.height, image.width) and result.labels.dtype == np.int32
        (single,) = segmenter([image], classes, bg_thresh=0.3)
        np.testing.assert_array_equal(result.labels, single.labels)
        np.testing.assert_array_equal(result.segment_labels, single.segment_labels)
        np.testing.assert_allclose(result.segment_probs, single.segment_probs, rtol=1e-5, atol=1e-6)
    assert segmenter([], classes) == []


def test_text_embeddings_are_cached_per_vocabulary(world):
    seg = Segmenter(world.checkpoint)
    image = _images()[0]
    seg([image], ["cat", "dog"])
    misses = seg.vocabulary.misses
    seg([image, image], ["cat", "dog"])
    seg([image], "cat\ndog")  # the same vocabulary, spelled differently
    seg([image], [["cat"], ["dog"]], bg_thresh=0.9)
    assert seg.vocabulary.misses == misses
    seg([image], ["cat", "dog", "bird"])
    assert seg.vocabulary.misses == misses + 1


def test_thresholds_zero_and_one(segmenter):
    images = _images()[:3]
    classes = API_CLASSES
    for result in segmenter(images, classes, bg_thresh=1.0, bg_prompt=False):
        # probabilities of a softmax over 3 classes stay below 1: every segment is background
        assert (result.segment_probs < 1.0).all()
        assert (result.labels == 0).all()
    for result in segmenter(images, classes, bg_thresh=0.0, bg_prompt=False):
        assert (result.labels > 0).all()  # nothing falls below 0: every pixel gets a class
    for result in segmenter(images, classes, bg_thresh=0.4, bg_prompt=False):
        kept = set(result.segment_labels[result.segment_probs >= 0.4].tolist())
        assert set(np.unique(result.labels).tolist()) <= kept | {0}


def test_background_prompt(segmenter):
    images = _images()[:3]
    space = segmenter.label_space(["background, sky", "cat", "dog"], bg_prompt=True)
    assert space == LabelSpace(("background", "cat", "dog"), (("background", "sky"), ("cat",), ("dog",)), 0)
    for result in segmenter(images, ["background, sky", "cat", "dog"], bg_thresh=0.0, bg_prompt=True):
        # with background prompted, label 0 is a class the text side can pick, threshold or not
        assert result.class_names == ("background", "cat", "dog")
        assert set(np.unique(result.labels).tolist()) <= set(result.segment_labels.tolist())
    for result in segmenter(images, ["cat", "dog"], bg_thresh=1.0, bg_prompt=True):
        assert (result.labels == 0).all()


def test_leading_background_entry_only_declares_label_zero(segmenter):
    images = _images()[:3]
    plain = segmenter(images, ["cat", "dog"], bg_thresh=0.3, bg_prompt=False)
    declared = segmenter(images, ["background", "cat", "dog"], bg_thresh=0.3, bg_prompt=False)
    for a, b in zip(plain, declared, strict=True):
        assert a.class_names == b.class_names == ("background", "cat", "dog")
        np.testing.assert_array_equal(a.labels, b.labels)
    assert segmenter.label_space(["Background", "cat"], bg_prompt=False) == LabelSpace(
        ("background", "cat"), (("cat",),), 1
    )
    with pytest.raises(ZerosegError, match="no foreground class"):
        segmenter(images, ["background"])
    # anywhere else it would be a second, foreground label also called "background"
    for classes in (["cat", "background"], ["cat", "Background, sky", "dog"]):
        with pytest.raises(ZerosegError, match="list it first"):
            segmenter(images, classes)
    # without a background label it is an ordinary class name
    assert segmenter.label_space(["cat", "background"], background=False).names == ("cat", "background")


def test_no_background_label_space(segmenter):
    images = _images()[:3]
    classes = ["sky", "cat", "dog"]
    space = segmenter.label_space(classes, background=False)
    assert space == LabelSpace(("sky", "cat", "dog"), (("sky",), ("cat",), ("dog",)), 0)
    for result in segmenter(images, classes, background=False, bg_thresh=1.0):  # no threshold applies
        assert result.class_names == ("sky", "cat", "dog")
        assert set(np.unique(result.labels).tolist()) <= set(result.segment_labels.tolist()) <= {0, 1, 2}


def test_checkpoint_inference_defaults_apply(world, tmp_path):
    ckpt = load_checkpoint(world.checkpoint)
    config = make_config(world.student_cfg, world.teacher, bg_thresh=1.0, bg_prompt=False)
    save_checkpoint(tmp_path / "strict.pt", config=config, student=ckpt.student, text=ckpt.text)
    seg = Segmenter(tmp_path / "strict.pt")
    assert seg.default_bg_thresh == 1.0 and seg.short_side == SHORT_SIDE
    assert all((r.labels == 0).all() for r in seg(_images()[:2], ["cat", "dog"]))
    assert not any((r.labels == 0).all() for r in seg(_images()[:2], ["cat", "dog"], bg_thresh=0.0))


def test_segmenter_refuses_bad_arguments(segmenter, world):
    image = _images()[0]
    for thresh in (-0.1, 1.1, float("nan")):
        with pytest.raises(ZerosegError, match=r"\[0, 1\]"):
            segmenter([image], ["cat"], bg_thresh=thresh)
    with pytest.raises(ZerosegError, match="batch size"):
        segmenter([image], ["cat"], batch_size=0)
    with pytest.raises(ZerosegError, match="listed twice"):
        segmenter([image], ["cat", "cat"])
    with pytest.raises(ZerosegError, match="smaller than the patch"):
        Segmenter(world.checkpoint, short_side=0)


def test_unknown_class_words_warn_or_are_refused_with_strict_vocab(cli, tmp_path):
    """The bundled model's tokenizer maps `cat` (like every word it lacks) to one unknown token:
    a one-line warning names it; `--strict-vocab` refuses it in one line, before any output."""
    from helpers import write_image

    image = write_image(tmp_path / "img.png", 32, 40)
    with pytest.warns(UserWarning, match="does not know 'cat'"):
        result = cli("segment", "bundled", image, "--labels", "cat,red", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    out = tmp_path / "strict"
    result = cli("segment", "bundled", image, "--labels", "cat,red", "--out", out, "--strict-vocab")
    assert_one_line_error(result, "'cat'", "--strict-vocab")
    assert not out.exists() or not any(out.iterdir())
