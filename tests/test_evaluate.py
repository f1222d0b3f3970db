"""`zeroseg eval` on a ShapeWorld VOC-layout set, cross-checked against `zeroseg segment`'s label PNGs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error
from PIL import Image
from typer.testing import CliRunner

from zeroseg.cli import app
from zeroseg.data.voc import VOCDataset
from zeroseg.errors import ZerosegError
from zeroseg.evaluation.evaluate import evaluate
from zeroseg.infer.segmenter import Segmenter
from zeroseg.infer.visualize import encode_label_png
from zeroseg.shapeworld.write import write_scenes

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 10
SPLIT = "trainval"  # all ten scenes
BG_THRESH = "0.2"  # low enough that the random student names foreground pixels too, not only background


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "shapes"
    write_scenes(root, n=N_IMAGES, seed=3, size=64)
    return root


def _ids(root: Path) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{SPLIT}.txt").read_text().split()


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "P"
        return np.asarray(img).astype(np.int64)  # palette indices are the class ids


def _miou(preds: list[np.ndarray], masks: list[np.ndarray], num_classes: int) -> float:
    """mmseg's mIoU, written out independently of zeroseg.evaluation.metrics: areas summed over the set,
    255 and out-of-range labels left out, classes absent from both prediction and label skipped."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, mask in zip(preds, masks, strict=True):
        valid = (mask != 255) & (mask >= 0) & (mask < num_classes)
        for c in range(num_classes):
            p, t = (pred == c) & valid, (mask == c) & valid
            inter[c] += np.count_nonzero(p & t)
            union[c] += np.count_nonzero(p | t)
    present = union > 0
    return float(np.mean(inter[present] / union[present]))


@pytest.fixture(scope="module")
def segmented(world, dataset, tmp_path_factory) -> dict[str, np.ndarray]:
    """`zeroseg segment` on every image of the split, with the data set's class file: id -> labels."""
    out = tmp_path_factory.mktemp("seg")
    images = [str(dataset / "JPEGImages" / f"{i}.jpg") for i in _ids(dataset)]
    result = CliRunner().invoke(
        app,
        ["segment", str(world.checkpoint), *images, "--labels-file", str(dataset / "classes.txt")]
        + ["--short-side", "128", "--bg-thresh", BG_THRESH, "--batch-size", "8", "--out", str(out)],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return {i: _mask(out / f"{i}_labels.png") for i in _ids(dataset)}


def _eval(cli, world, dataset, *extra, short_side: int = 128):
    return cli(
        "eval", world.checkpoint, "--dataset", dataset, "--split", SPLIT, "--short-side", short_side,
        "--bg-thresh", BG_THRESH, "--batch-size", "8", "-q", *extra,
    )  # fmt: skip


def test_eval_miou_equals_miou_of_segment_outputs(cli, world, dataset, segmented, tmp_path):
    out_json = tmp_path / "scores" / "eval.json"
    result = _eval(cli, world, dataset, "--json", out_json)
    assert result.code == 0, result.err
    report = json.loads(out_json.read_text())
    classes = (dataset / "classes.txt").read_text().split()
    assert report["class_names"] == classes
    ids = _ids(dataset)
    masks = [_mask(dataset / "SegmentationClass" / f"{i}.png") for i in ids]
    preds = [segmented[i] for i in ids]
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) > 2  # a non-trivial prediction
    want = _miou(preds, masks, len(classes))
    assert 0.0 <= report["mIoU"] <= 1.0
    assert report["mIoU"] == pytest.approx(want, abs=1e-12)
    assert report["settings"]["images"] == N_IMAGES and report["summary"]["num_images"] == N_IMAGES
    assert report["summary"]["out_of_range_pixels"] == 0
    assert report["summary"]["ignored_pixels"] == sum(int((m == 255).sum()) for m in masks)
    assert set(report["per_class_IoU"]) == set(classes)
    assert f"mIoU {report['mIoU']:.4f}" in result.out
    assert "warning" not in result.err


def test_eval_limit(cli, world, dataset, segmented, tmp_path):
    out_json = tmp_path / "eval.json"
    result = _eval(cli, world, dataset, "--limit", "3", "--json", out_json)
    assert result.code == 0, result.err
    report = json.loads(out_json.read_text())
    ids = _ids(dataset)[:3]
    masks = [_mask(dataset / "SegmentationClass" / f"{i}.png") for i in ids]
    assert report["settings"]["images"] == 3 and report["summary"]["num_images"] == 3
    assert report["summary"]["num_pixels"] == sum(m.size for m in masks)
    num_classes = len(report["class_names"])
    assert report["mIoU"] == pytest.approx(_miou([segmented[i] for i in ids], masks, num_classes), abs=1e-12)
    for bad in ("0", "-2"):
        assert_one_line_error(_eval(cli, world, dataset, "--limit", bad), "--limit must be a positive")


def test_mask_values_outside_the_classes_are_ignored_with_a_counted_warning(
    cli, world, dataset, segmented, tmp_path
):
    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    ids = _ids(root)
    masks = {i: _mask(root / "SegmentationClass" / f"{i}.png") for i in ids}
    num_classes = len((root / "classes.txt").read_text().split())
    bad_count = 0
    for k, item in enumerate(ids[:3]):  # stray values in three masks, e.g. from another class list
        mask = masks[item]
        rows = slice(10 + k, 20 + k)
        region = mask[rows, 5:30]
        stray = region != 255
        region[stray] = num_classes + k  # 7, 8, 9: just past the class list
        bad_count += int(stray.sum())
        (root / "SegmentationClass" / f"{item}.png").write_bytes(encode_label_png(mask))
    out_json = tmp_path / "eval.json"
    result = _eval(cli, world, root, "--limit", "3", "--json", out_json)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f" {bad_count} mask pixels" in warnings[0], result.err
    assert f"outside the {num_classes} classes" in warnings[0]
    report = json.loads(out_json.read_text())
    assert report["summary"]["out_of_range_pixels"] == bad_count
    # counted as ignore: the same mIoU as with those pixels set to 255
    as_ignore = [np.where(masks[i] >= num_classes, 255, masks[i]) for i in ids[:3]]
    want = _miou([segmented[i] for i in ids[:3]], as_ignore, num_classes)
    assert report["mIoU"] == pytest.approx(want, abs=1e-12)


def test_class_list_without_background(cli, world, dataset, tmp_path):
    """Context59-style: no background class, label 0 -> ignore (--reduce-zero-label), every pixel named."""
    colours = (dataset / "classes.txt").read_text().split()[1:]
    (tmp_path / "colours.txt").write_text("\n".join(colours) + "\n")
    out_json = tmp_path / "eval.json"
    options = ["--classes", tmp_path / "colours.txt", "--reduce-zero-label", "--limit", "4"]
    result = _eval(cli, world, dataset, *options, "--json", out_json, short_side=64)
    assert result.code == 0, result.err
    report = json.loads(out_json.read_text())
    assert report["class_names"] == colours and "mIoU_fg" not in report["summary"]
    ids = _ids(dataset)[:4]
    seg = Segmenter(world.checkpoint, short_side=64)
    images = [dataset / "JPEGImages" / f"{i}.jpg" for i in ids]
    preds = [r.labels for r in seg(images, colours, background=False)]
    masks = []
    for i in ids:
        mask = _mask(dataset / "SegmentationClass" / f"{i}.png")
        masks.append(np.where((mask == 0) | (mask == 255), 255, mask - 1))
    assert report["summary"]["out_of_range_pixels"] == 0
    assert report["mIoU"] == pytest.approx(_miou(preds, masks, len(colours)), abs=1e-12)


def test_eval_refuses_background_not_first(cli, world, small_voc):
    classes = (small_voc / "classes.txt").read_text().split()
    assert classes[0] == "background"
    moved = small_voc.parent / "moved_classes.txt"
    moved.write_text("\n".join([*classes[1:], "background"]) + "\n")
    result = cli("eval", world.checkpoint, "--dataset", small_voc, "--classes", moved, "-q")
    assert_one_line_error(result, "background", "first")
    missing = small_voc.parent / "no_background.txt"
    missing.write_text("\n".join(classes[1:]) + "\n")
    result = cli("eval", world.checkpoint, "--dataset", small_voc, "--classes", missing, "-q")
    assert result.code == 0 and "warning:" in result.err and "label 0" in result.err


def _layout_variants(dataset: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    variants: dict[str, tuple[Path, str]] = {"missing": (tmp_path / "nowhere", "data set folder not found")}
    for name, remove, expect in (
        ("no_masks", "SegmentationClass", "no SegmentationClass/"),
        ("no_split", "ImageSets", "split file not found"),
        ("no_images", "JPEGImages", "no JPEGImages/"),
    ):
        root = tmp_path / name
        shutil.copytree(dataset, root)
        shutil.rmtree(root / remove)
        variants[name] = (root, expect)
    root = tmp_path / "no_classes"
    shutil.copytree(dataset, root)
    (root / "classes.txt").unlink()
    variants["no_classes"] = (root, "no classes.txt")
    return variants


@pytest.mark.parametrize("variant", ["missing", "no_masks", "no_split", "no_images", "no_classes"])
def test_bad_dataset_layout_is_one_line_error(cli, world, dataset, tmp_path, variant):
    root, expect = _layout_variants(dataset, tmp_path)[variant]
    out_json = tmp_path / "eval.json"
    assert_one_line_error(_eval(cli, world, root, "--json", out_json), expect)
    assert not out_json.exists()


def test_split_file_names_a_missing_mask(cli, world, dataset, tmp_path):
    root = tmp_path / "holes"
    shutil.copytree(dataset, root)
    (root / "SegmentationClass" / f"{_ids(root)[2]}.png").unlink()
    assert_one_line_error(_eval(cli, world, root), "have no mask")


@pytest.mark.parametrize(
    ("content", "expect"),
    [(b"half", "truncated or corrupt"), (b"other", "not written by zeroseg"), (None, "checkpoint not found")],
)
def test_bad_checkpoint_is_one_line_error(cli, world, dataset, tmp_path, content, expect):
    path = tmp_path / "model.pt"
    if content == b"half":
        data = world.checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == b"other":
        torch.save({"model": {"w": torch.zeros(3)}, "epoch": 3}, path)
    out_json = tmp_path / "eval.json"
    result = cli("eval", path, "--dataset", dataset, "--split", SPLIT, "-q", "--json", out_json)
    assert_one_line_error(result, expect)
    assert not out_json.exists()


def test_bad_eval_options(cli, world, dataset, tmp_path):
    assert_one_line_error(_eval(cli, world, dataset, "--bg-thresh", "1.01"), "[0, 1]")
    assert_one_line_error(_eval(cli, world, dataset, "--json", tmp_path), "is a folder")
    assert_one_line_error(_eval(cli, world, dataset, "--classes", tmp_path / "nope.txt"), "not found")


def test_oracle_scores_one_and_class_list_is_the_label_space(dataset):
    """`evaluate` itself: a segmenter that returns the ground truth scores mIoU 1, in data set order."""
    data = VOCDataset(dataset, SPLIT)
    calls = []

    class Oracle:
        position = 0

        def __call__(self, images, classes, *, bg_thresh=None, bg_prompt=None, background=True, batch_size=8):
            calls.append((len(images), [list(c) for c in classes], background))
            out = []
            for image in images:
                mask = data.load_mask(self.position)
                assert mask.shape == (image.height, image.width)
                out.append(_Result(np.where(mask == 255, 0, mask)))
                self.position += 1
            return out

    report = evaluate(Oracle(), data, batch_size=4, progress=False)
    assert report.miou == 1.0 and report.summary["aAcc"] == 1.0
    assert [n for n, _, _ in calls] == [4, 4, 2]
    assert all(c == data.class_synonyms and bg for _, c, bg in calls)
    assert not math.isnan(report.seconds)
    with pytest.raises(ZerosegError, match="--limit"):
        evaluate(Oracle(), data, limit=0, progress=False)


class _Result:
    def __init__(self, labels: np.ndarray):
        self.labels = labels


def test_eval_warns_about_unknown_class_words_or_refuses_them_with_strict_vocab(cli, small_voc, tmp_path):
    """`cat` is not in the bundled model's vocabulary: a one-line warning, or with `--strict-vocab` a
    one-line error and no scores written."""
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ncat\nred\n")
    args = ["eval", "bundled", "--dataset", small_voc, "--classes", classes, "--limit", "1", "-q"]
    with pytest.warns(UserWarning, match="does not know 'cat'"):
        result = cli(*args, "--json", tmp_path / "scores.json")
    assert result.code == 0, result.err
    result = cli(*args, "--json", tmp_path / "strict.json", "--strict-vocab")
    assert_one_line_error(result, "'cat'", "--strict-vocab")
    assert not (tmp_path / "strict.json").exists()
