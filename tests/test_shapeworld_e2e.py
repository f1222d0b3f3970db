"""A short label-free training run on ShapeWorld segments better than chance (issue 3, item 9).

Train scenes -> the bundled teacher's grid-view features -> a `shapeworld` student distilled for a
few hundred steps at 64 px -> `evaluate` on held-out scenes. The floor is computed from the val
masks' class frequencies: the better of (a) labelling every pixel background and (b) labelling
pixels at random with the classes' frequencies (expected IoU_c = p_c / (2 - p_c)).
"""

from __future__ import annotations

import numpy as np
import pytest

from zeroseg.bundled import bundled_teacher
from zeroseg.data.sources import ImageSource
from zeroseg.data.voc import VOCDataset
from zeroseg.evaluation.evaluate import evaluate
from zeroseg.evaluation.metrics import chance_mious
from zeroseg.infer.segmenter import Segmenter
from zeroseg.shapeworld.write import write_scenes
from zeroseg.teacher.cache import build_cache
from zeroseg.teacher.load import load_teacher
from zeroseg.train.config import TrainConfig
from zeroseg.train.loop import train

SIZE = 64


def class_pixels(dataset: VOCDataset) -> np.ndarray:
    """Ground-truth pixels per class over the dataset (ignore pixels excluded)."""
    counts = np.zeros(dataset.num_classes)
    for i in range(len(dataset)):
        mask = dataset.load_mask(i)
        counts += np.bincount(mask[mask != 255].ravel(), minlength=256)[: dataset.num_classes]
    return counts


def chance_floor(dataset: VOCDataset) -> float:
    """max(all-background mIoU, expected mIoU of frequency-matched random labels)."""
    return max(chance_mious(class_pixels(dataset)))


def test_chance_floor_formula() -> None:
    class Two:
        num_classes = 2

        def __len__(self) -> int:
            return 1

        def load_mask(self, i: int) -> np.ndarray:
            return np.array([[0, 0, 0, 1], [255, 0, 0, 1]], dtype=np.uint8)

    # p = (5/7, 2/7): all background -> (5/7) / 2 = 0.357; random -> mean(p/(2-p)) = (0.556+0.167)/2
    assert chance_floor(Two()) == pytest.approx(max(5 / 14, (5 / 9 + 1 / 6) / 2))


@pytest.mark.slow
def test_short_training_beats_the_chance_floor(tmp_path) -> None:
    write_scenes(tmp_path / "train", n=256, seed=11, size=SIZE, val_fraction=0.0)
    write_scenes(tmp_path / "val", n=24, seed=12, size=SIZE, val_fraction=1.0)
    teacher = load_teacher(str(bundled_teacher()))
    build_cache(
        ImageSource.open(str(tmp_path / "train" / "JPEGImages")), teacher, tmp_path / "cache",
        image_size=SIZE, progress=False,
    )  # fmt: skip
    cfg = TrainConfig(
        data=str(tmp_path / "train" / "JPEGImages"), out=str(tmp_path / "run"),
        teacher_cache=str(tmp_path / "cache"), preset="shapeworld", image_size=SIZE, steps=150,
        batch_size=32, lr=1e-3, weights=(1.0, 0.0, 1.0), region_weight=1.0, templates="shapeworld",
        test_short_side=SIZE, bg_prompt=True, log_every=50, device="cpu",
    )  # fmt: skip
    train(cfg, progress=False)
    val = VOCDataset(tmp_path / "val", "val")
    report = evaluate(Segmenter(tmp_path / "run" / "model.pt"), val, bg_thresh=0.0, progress=False)
    floor = chance_floor(val)
    assert 0.1 < floor < 0.3
    assert report.miou > floor + 0.05, f"mIoU {report.miou:.3f} vs chance floor {floor:.3f}"
