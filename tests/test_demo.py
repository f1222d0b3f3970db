"""`zeroseg demo`: picture, overlays and scores from a checkpoint and teacher, and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zeroseg.shapeworld.demo import run_demo, scene_miou


def test_demo_writes_panel_overlays_and_scores(world, tmp_path) -> None:
    result = run_demo(
        tmp_path / "demo", seed=3, size=96, checkpoint=world.checkpoint, teacher=str(world.teacher_file)
    )
    panel = Image.open(result.panel)
    assert panel.width > 4 * 256 and panel.height > 256  # four tiles side by side
    info = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(info["scene_mIoU"]) == {"ZeroSeg", "MaskCLIP"}
    assert all(0.0 <= v <= 1.0 for v in info["scene_mIoU"].values())
    for path in result.files:
        assert path.is_file()
    assert Image.open(tmp_path / "demo" / "scene.png").size == (96, 96)


def test_demo_with_several_scenes_has_a_row_each_and_their_mean(world, tmp_path) -> None:
    one = run_demo(tmp_path / "one", seed=3, size=96, checkpoint=world.checkpoint, baseline=False)
    two = run_demo(tmp_path / "two", seed=3, scenes=2, size=96, checkpoint=world.checkpoint, baseline=False)
    first, both = Image.open(one.panel), Image.open(two.panel)
    assert both.width == first.width and both.height > 2 * first.height  # two rows
    info = json.loads((tmp_path / "two" / "demo.json").read_text())
    assert [s["seed"] for s in info["scenes"]] == [3, 4]
    assert info["scenes"][0]["scene_mIoU"] == pytest.approx(one.scores)
    mean = np.mean([s["scene_mIoU"]["ZeroSeg"] for s in info["scenes"]])
    assert info["scene_mIoU"]["ZeroSeg"] == pytest.approx(mean) == pytest.approx(two.scores["ZeroSeg"])


def test_scene_miou_perfect_and_disjoint() -> None:
    truth = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    assert scene_miou(truth.astype(np.int64) % 255, truth, 3) == pytest.approx(1.0)
    assert scene_miou(np.array([[1, 0], [0, 0]]), truth, 3) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"size": 10}, "--size"),
        ({"seed": -1}, "--seed"),
        ({"scenes": 0}, "--scenes"),
        ({"scenes": 17}, "--scenes"),
    ],
)
def test_bad_demo_options_are_refused(world, tmp_path, kwargs, fragment) -> None:
    from zeroseg.errors import ZerosegError

    with pytest.raises(ZerosegError, match=fragment):
        run_demo(tmp_path / "d", checkpoint=world.checkpoint, baseline=False, **kwargs)
    assert not (tmp_path / "d").exists()
