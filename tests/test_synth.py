"""ShapeWorld: determinism by seed, item independence, masks that match the pixels, the VOC layout."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zeroseg.cli import synth as synth_command
from zeroseg.data.shapes import BASE_RGB
from zeroseg.data.voc import VOCDataset
from zeroseg.errors import ZerosegError
from zeroseg.shapeworld.write import (
    BACKGROUND_CAPTIONS,
    COLOURS,
    SHAPES,
    class_names,
    generate_caption_batch,
    generate_caption_item,
    generate_scene,
    ignore_band,
    is_val,
    relabel_scenes,
    write_captions,
    write_scenes,
)
from zeroseg.utils.console import new_app


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _saturation(rgb):
    rgb = rgb.astype(np.float64)
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0)


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, n=10, seed=3)
    return root


def test_scenes_byte_identical_for_a_seed(scenes_dir, tmp_path):
    write_scenes(tmp_path / "same", n=10, seed=3)
    assert _files(tmp_path / "same") == _files(scenes_dir)
    write_scenes(tmp_path / "other", n=10, seed=4)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(scenes_dir).keys()
    assert other["JPEGImages/000000.jpg"] != _files(scenes_dir)["JPEGImages/000000.jpg"]


def test_captions_byte_identical_for_a_seed(tmp_path):
    write_captions(tmp_path / "a", n=12, seed=5)
    write_captions(tmp_path / "b", n=12, seed=5)
    write_captions(tmp_path / "c", n=12, seed=6)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a["captions.jsonl"] != c["captions.jsonl"] and a["images/000000.png"] != c["images/000000.png"]
    records = [json.loads(line) for line in a["captions.jsonl"].decode().splitlines()]
    assert len(records) == 12 and set(records[0]) == {"file", "caption", "colour", "shape", "split"}
    images, captions, _, _ = generate_caption_batch(5, 12)
    assert [r["caption"] for r in records] == captions
    with Image.open(tmp_path / "a" / records[3]["file"]) as img:
        np.testing.assert_array_equal(np.asarray(img), images[3])  # lossless PNG, same pixels as in memory


def test_items_independent_of_n_and_chunking(scenes_dir, tmp_path):
    write_scenes(tmp_path / "few", n=4, seed=3)
    full, few = _files(scenes_dir), _files(tmp_path / "few")
    for name in ("JPEGImages/000003.jpg", "SegmentationClass/000003.png", "SegmentationObject/000002.png"):
        assert few[name] == full[name]
    whole = generate_caption_batch(11, 9)
    part = generate_caption_batch(11, 4, start=5)
    np.testing.assert_array_equal(whole[0][5:], part[0])
    assert whole[1][5:] == part[1]
    np.testing.assert_array_equal(generate_scene(2, index=7).image, generate_scene(2, index=7).image)


def test_generator_batches_are_fresh_and_reproducible():
    rng = np.random.default_rng(0)
    first, second = generate_caption_batch(rng, 4), generate_caption_batch(rng, 4)
    assert not np.array_equal(first[0], second[0])
    again = generate_caption_batch(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(first[0], again[0])
    images, captions, colour_ids, shape_ids = first
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert colour_ids.dtype == np.int64 and shape_ids.shape == (4,) and len(captions) == 4


def test_captions_match_pixels():
    images, captions, colour_ids, shape_ids = generate_caption_batch(21, 400)
    empty = colour_ids < 0
    assert 0.01 < empty.mean() < 0.10  # about 5% empty backgrounds
    assert (shape_ids[empty] < 0).all()
    assert all(captions[i] in BACKGROUND_CAPTIONS for i in np.flatnonzero(empty))
    assert len(set(captions)) > 100  # several templates x 48 objects
    for i in np.flatnonzero(~empty)[:120]:
        assert COLOURS[colour_ids[i]] in captions[i] and SHAPES[shape_ids[i]] in captions[i]
        sat = _saturation(images[i])
        assert (sat > 0.45).mean() > 0.08  # an object of radius >= 0.28 S is there
        mean = images[i][sat > 0.45].astype(np.float64).mean(0)
        assert np.argmin(((BASE_RGB - mean) ** 2).sum(1)) == colour_ids[i]
    for i in np.flatnonzero(empty):  # grey / low-saturation (dark noisy pixels can be a bit saturated)
        assert _saturation(images[i]).mean() < 0.25 and (_saturation(images[i]) > 0.45).mean() < 0.05


def test_scene_masks_match_pixels():
    obj_sat, bg_sat, checked = [], [], 0
    for index in range(30):
        scene = generate_scene(8, index=index)
        sat = _saturation(scene.image)
        mask = scene.colour_mask
        bg_sat.append(sat[mask == 0].mean())
        obj_sat.append(sat[(mask > 0) & (mask < 255)].mean())
        assert 2 <= len(scene.objects) <= 5
        for obj in scene.objects:
            inner = (scene.instances == obj["instance"]) & (mask != 255)
            if inner.sum() < 30:
                continue  # (almost) hidden behind later objects
            mean = scene.image[inner].astype(np.float64).mean(0)
            assert np.argmin(((BASE_RGB - mean) ** 2).sum(1)) == obj["colour_id"]
            assert set(np.unique(mask[inner])) == {obj["colour_id"] + 1}
            assert set(np.unique(scene.shape_mask[inner])) == {obj["shape_id"] + 1}
            checked += 1
        # the three masks agree on background and on the ignore band
        np.testing.assert_array_equal(mask == 0, scene.shape_mask == 0)
        np.testing.assert_array_equal(mask == 255, scene.shape_mask == 255)
        np.testing.assert_array_equal(scene.label_mask("both") == 255, mask == 255)
    assert checked > 60
    assert np.mean(obj_sat) > 0.6 and np.mean(bg_sat) < 0.15
    assert min(obj_sat) > 3 * max(bg_sat)


def test_ignore_band_is_a_one_pixel_border():
    scene = generate_scene(1, index=0, num_objects=(1, 1), radius=(20, 20))
    band = ignore_band(scene.instances)
    np.testing.assert_array_equal(scene.colour_mask == 255, band)
    obj = scene.instances == 1
    assert band.sum() > 0 and (band <= obj).all()
    # band pixels touch the background; the rest of the object does not
    padded = np.pad(obj, 1, constant_values=False)
    touches_bg = ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    np.testing.assert_array_equal(band, obj & touches_bg)
    assert band.sum() < 0.5 * obj.sum()
    tiny = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 2, 2], [0, 0, 2, 2]])
    assert ignore_band(tiny).astype(int).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 0]]


def test_voc_layout_readable(scenes_dir):
    meta = json.loads((scenes_dir / "dataset.json").read_text())
    assert (meta["num_train"], meta["num_val"], meta["labels"]) == (8, 2, "colour")
    val = VOCDataset(scenes_dir, "val")
    train = VOCDataset(scenes_dir, "train")
    assert len(val) == 2 and len(train) == 8 and not set(val.ids) & set(train.ids)
    assert val.class_names == class_names("colour") == ["background", *COLOURS]
    records = {json.loads(line)["id"]: json.loads(line) for line in (scenes_dir / "annotations.jsonl").open()}
    for image, mask, item in val:
        assert image.size == (128, 128) and mask.shape == (128, 128)
        assert set(np.unique(mask)) <= set(range(7)) | {255} and (mask == 255).any()
        scene = generate_scene(3, index=int(item))
        np.testing.assert_array_equal(mask, scene.colour_mask)
        assert np.abs(np.asarray(image, np.float64) - scene.image).mean() < 5.0  # JPEG q95 drops some noise
        assert records[item]["objects"] == scene.objects and records[item]["split"] == "val"
        with Image.open(scenes_dir / "SegmentationObject" / f"{item}.png") as img:
            objects = np.asarray(img)
        assert int((objects != 0).sum()) == sum(o["pixels"] for o in scene.objects)


def test_class_files_and_relabel(scenes_dir, tmp_path):
    lines = {
        name: (scenes_dir / f"classes_{name}.txt").read_text().splitlines()
        for name in ("colour", "shape", "both")
    }
    assert lines["colour"] == (scenes_dir / "classes.txt").read_text().splitlines()
    assert lines["shape"] == ["background", *SHAPES]
    assert len(lines["both"]) == 49 and lines["both"][1] == "red circle" and lines["both"][-1] == "cyan ring"

    write_scenes(tmp_path / "both", n=10, seed=3, labels="both")
    both = VOCDataset(tmp_path / "both", "train")
    assert both.num_classes == 49
    _, mask, item = both[0]
    scene = generate_scene(3, index=int(item))
    np.testing.assert_array_equal(mask, scene.label_mask("both"))
    assert relabel_scenes(tmp_path / "both", "colour") == 10
    relabelled = _files(tmp_path / "both")
    original = _files(scenes_dir)
    for name in original:
        if name.startswith("SegmentationClass/") or name.startswith("classes"):
            assert relabelled[name] == original[name], name


def test_val_split_is_spread_and_exact():
    for f in (0.0, 0.2, 0.33, 1.0):
        flags = [is_val(i, f) for i in range(50)]
        for n in (1, 7, 50):
            assert sum(flags[:n]) == int(n * f)


def test_bad_arguments(tmp_path):
    with pytest.raises(ZerosegError, match="--n"):
        write_scenes(tmp_path, n=0)
    with pytest.raises(ZerosegError, match="label set"):
        write_scenes(tmp_path, n=1, labels="texture")
    with pytest.raises(ZerosegError, match="size"):
        generate_scene(0, 8)
    with pytest.raises(ZerosegError, match="seed"):
        write_captions(tmp_path, n=1, seed=-1)
    with pytest.raises(ZerosegError, match="val-fraction"):
        write_captions(tmp_path, n=1, val_fraction=1.5)
    with pytest.raises(ZerosegError, match="annotations"):
        relabel_scenes(tmp_path, "shape")
    assert not list(tmp_path.iterdir())
    image, caption, colour_id, shape_id = generate_caption_item(0, 32, index=3)
    assert image.shape == (32, 32, 3)


def _app():
    app = new_app("test")
    app.callback()(lambda: None)  # keep `synth` a sub-command
    synth_command.register(app)
    return app


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cap"
    result = runner.invoke(_app(), ["synth", "--out", str(out), "--kind", "captions", "--n", "6", "-q"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 captions" in result.output
    assert len((out / "captions.jsonl").read_text().splitlines()) == 6
    result = runner.invoke(_app(), ["synth", "--out", str(out), "--n", "2", "-q"])
    assert isinstance(result.exception, ZerosegError) and "--overwrite" in str(result.exception)
    result = runner.invoke(
        _app(),
        ["synth", "--out", str(tmp_path / "sc"), "--n", "3", "--size", "64", "--labels", "shape", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert VOCDataset(tmp_path / "sc", "train")[0][0].size == (64, 64)
    assert (tmp_path / "sc" / "classes.txt").read_text().splitlines() == ["background", *SHAPES]
    result = runner.invoke(_app(), ["synth", "--out", str(tmp_path / "x"), "--n", "3", "--kind", "video"])
    assert isinstance(result.exception, ZerosegError)
