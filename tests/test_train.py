"""Training: the loss falls, interrupted runs resume exactly, checkpoints are self-contained, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny_clip import tiny_clip

from zeroseg.checkpoint import load_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.shapeworld.write import write_scenes
from zeroseg.teacher.load import save_teacher
from zeroseg.train.config import TrainConfig
from zeroseg.train.loop import train


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("world")
    write_scenes(root / "scenes", n=8, seed=3, size=64, val_fraction=0.0)
    save_teacher(root / "teacher.pt", tiny_clip(seed=1))
    return {"data": root / "scenes" / "JPEGImages", "teacher": root / "teacher.pt", "root": root}


def _cfg(world: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    base = TrainConfig(
        data=str(world["data"]), out=str(out), teacher=str(world["teacher"]), preset="tiny", image_size=64,
        steps=30, batch_size=4, lr=2e-3, warmup_fraction=0.1, match="two-way", log_every=1, save_every=1000,
        seed=0, device="cpu",
    )  # fmt: skip
    return replace(base, **overrides)


def test_thirty_steps_lower_the_loss_and_write_a_self_contained_model(world, tmp_path) -> None:
    result = train(_cfg(world, tmp_path / "run"), progress=False)
    losses = [row["loss"] for row in result.history]
    assert result.step == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"distill", "match", "reconstruction", "groups_used", "images_per_s"} <= rows[0].keys()
    assert rows[0]["torch_threads"] == torch.get_num_threads()  # floats differ between thread counts
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt")
    assert ckpt.train_state is None
    assert not any(k.startswith("decoder.") for k in ckpt.student)  # inference-only
    model = ckpt.build_student()
    out = model.segment(torch.zeros(1, 3, 64, 64))
    assert out.maps.shape == (1, 8, 8, 8)
    text = ckpt.build_text_encoder().encode_texts(["a red circle"])
    assert text.shape == (1, 64)
    assert ckpt.config.teacher["spec"] == str(world["teacher"])


def test_region_loss_trains_with_and_without_masking(world, tmp_path) -> None:
    for ratio in (0.6, 0.0):
        cfg = _cfg(world, tmp_path / f"r{ratio}", steps=3, region_weight=1.0, mask_ratio=ratio)
        result = train(cfg, progress=False)
        assert all(row["region"] > 0 for row in result.history)
        assert all((row["reconstruction"] > 0) == (ratio > 0) for row in result.history)
    with pytest.raises(ZerosegError, match="region-weight"):
        train(_cfg(world, tmp_path / "bad", region_weight=-1.0))


def test_resumed_run_reproduces_the_uninterrupted_one(world, tmp_path) -> None:
    full = train(_cfg(world, tmp_path / "full", steps=6), progress=False)
    first = train(_cfg(world, tmp_path / "split", steps=6, stop_after_steps=3), progress=False)
    assert first.step == 3 and not (tmp_path / "split" / "model.pt").exists()
    second = train(_cfg(world, tmp_path / "split", steps=6), resume=True, progress=False)
    assert second.step == 6
    want = {row["step"]: row["loss"] for row in full.history}
    got = {row["step"]: row["loss"] for row in first.history + second.history}
    assert got.keys() == want.keys()
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), step


def test_training_from_a_teacher_cache(world, tmp_path) -> None:
    from zeroseg.data.sources import ImageSource
    from zeroseg.teacher.cache import build_cache
    from zeroseg.teacher.load import load_teacher

    build_cache(
        ImageSource.open(world["data"]), load_teacher(str(world["teacher"])), tmp_path / "cache",
        grids=(1, 2, 3, 4), image_size=64, batch_size=4, dtype="float32", progress=False,
    )  # fmt: skip
    cfg = _cfg(
        world, tmp_path / "run", teacher=None, teacher_cache=str(tmp_path / "cache"), image_size=None, steps=3
    )
    result = train(cfg, progress=False)
    assert result.step == 3
    with pytest.raises(ZerosegError, match="differs from the cache"):
        train(replace(cfg, out=str(tmp_path / "run2"), image_size=96), progress=False)


def test_corrupt_images_are_skipped_and_counted(world, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(world["data"].iterdir())[:4]:
        (data / p.name).write_bytes(p.read_bytes())
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = train(_cfg(world, tmp_path / "run", data=str(data), steps=2, batch_size=5), progress=False)
    assert sum(row["skipped_images"] for row in result.history) >= 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"batch_size": 0}, "batch-size must be positive"),
        ({"mask_ratio": 1.0}, r"mask-ratio must be in \[0, 1\)"),
        ({"grids": (0, 2)}, "grids must be positive"),
        ({"grids": (1,)}, "at least one grid finer than 1"),
        ({"match": "hungarian"}, "--match must be one of"),
        ({"teacher": None}, "pass --teacher"),
        ({"data": "/nonexistent/folder"}, "not found"),
        ({"teacher": "NoSuchModel-B-99:openai"}, "NoSuchModel"),
    ],
)
def test_bad_training_input_is_refused(world, tmp_path, overrides, message) -> None:
    with pytest.raises(ZerosegError, match=message):
        train(_cfg(world, tmp_path / "run", **overrides), progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_empty_data_folder_and_existing_run_are_refused(world, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZerosegError, match="no images"):
        train(_cfg(world, tmp_path / "run", data=str(tmp_path / "empty")), progress=False)
    train(_cfg(world, tmp_path / "done", steps=1), progress=False)
    with pytest.raises(ZerosegError, match="already holds a run"):
        train(_cfg(world, tmp_path / "done", steps=1), progress=False)
    with pytest.raises(ZerosegError, match="nothing to resume"):
        train(_cfg(world, tmp_path / "fresh", steps=1), resume=True, progress=False)


def test_sigterm_saves_a_resumable_checkpoint(world, tmp_path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "zeroseg", "train", "--data", str(world["data"])]
    cmd += ["--teacher", str(world["teacher"]), "--out", str(out), "--image-size", "64", "--steps", "100000"]
    cmd += ["--batch-size", "4", "--log-every", "1", "--device", "cpu", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continue with --resume" in err and "Traceback" not in err
    state = load_checkpoint(out / "last.pt").train_state
    assert state is not None and state["step"] >= 2
    assert not any(name.startswith(".") for name in os.listdir(out))  # no temp files left behind


def test_soft_assignment_warm_up(world, tmp_path, monkeypatch) -> None:
    """`--soft-assign F`: the first F of the steps assign softly (rows are distributions, not one-hot,
    and no Gumbel noise: two forwards agree), the rest hard; eval mode is always hard; a resumed run
    switches at the same step as an uninterrupted one."""
    from zeroseg.model.config import student_preset
    from zeroseg.model.grouping import set_soft_assignment
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.train import loop

    model = ZeroSegStudent(student_preset("shapeworld", image_size=64, out_dim=64)).train()
    x = torch.randn(2, 3, 64, 64)
    set_soft_assignment(model, True)
    soft = model(x).assignment
    assert not torch.equal(soft, soft.round()) and torch.allclose(soft.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert torch.equal(model(x).assignment, soft)  # no noise
    set_soft_assignment(model, False)
    hard = model(x).assignment
    assert torch.equal(hard, hard.round())  # one-hot (Gumbel, hard)
    set_soft_assignment(model, True)
    maps = model.eval().segment(x).maps
    assert torch.equal(maps, maps.round())
    seen: list[bool] = []
    original = loop.set_soft_assignment
    monkeypatch.setattr(loop, "set_soft_assignment", lambda m, on: (seen.append(on), original(m, on)))
    train(_cfg(world, tmp_path / "full", steps=8, region_weight=1.0, soft_assign=0.25), progress=False)
    assert seen == [True, True, False, False, False, False, False, False]
    seen.clear()
    train(_cfg(world, tmp_path / "split", steps=8, soft_assign=0.25, stop_after_steps=1), progress=False)
    train(_cfg(world, tmp_path / "split", steps=8, soft_assign=0.25), resume=True, progress=False)
    assert seen == [True, True, False, False, False, False, False, False]
    with pytest.raises(ZerosegError, match="--soft-assign must be a share of the steps in"):
        train(_cfg(world, tmp_path / "bad", soft_assign=1.0))


def test_attention_window_is_identical_at_the_training_size_and_saved(world, tmp_path) -> None:
    """`--attn-window` equal to the training grid (64 px / patch 8 = 8 patches) trains the same
    weights as full attention (to float round-off), and the checkpoint records the window, so
    inference at larger inputs attends in windows."""
    plain = train(_cfg(world, tmp_path / "plain", steps=3, mask_ratio=0.0), progress=False)
    windowed = train(_cfg(world, tmp_path / "win", steps=3, mask_ratio=0.0, attn_window=8), progress=False)
    for a, b in zip(plain.history, windowed.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    ckpt = load_checkpoint(tmp_path / "win" / "model.pt")
    assert ckpt.student_config.attn_window == 8
    assert load_checkpoint(tmp_path / "plain" / "model.pt").student_config.attn_window is None
    with pytest.raises(ZerosegError, match="--attn-window must be a positive number of patches"):
        train(_cfg(world, tmp_path / "bad", attn_window=0))


def test_heldout_region_loss_is_the_region_term_over_every_cached_image(world, tmp_path) -> None:
    """`zeroseg.train.selection.heldout_loss`: the region loss of a model's eval-mode (hard)
    assignments against a teacher cache of unlabeled images, averaged over the images (the batch
    size only splits the work), and a cache that is not the images' is a one-line error."""
    from zeroseg.data.sources import CropDataset, ImageSource
    from zeroseg.preprocess import normalize
    from zeroseg.teacher.cache import build_cache
    from zeroseg.teacher.cache_reader import TeacherCache
    from zeroseg.teacher.load import load_teacher
    from zeroseg.teacher.views import view_patch_weights
    from zeroseg.train.losses import region_loss, seen_view_weights
    from zeroseg.train.selection import heldout_loss

    source = ImageSource.open(world["data"])
    teacher = load_teacher(str(world["teacher"]))
    build_cache(source, teacher, tmp_path / "cache", image_size=64, progress=False)
    train(_cfg(world, tmp_path / "run", steps=2, mask_ratio=0.0, region_weight=1.0), progress=False)
    model_pt = tmp_path / "run" / "model.pt"
    whole = heldout_loss(model_pt, world["data"], tmp_path / "cache")
    assert heldout_loss(model_pt, world["data"], tmp_path / "cache", batch_size=3) == pytest.approx(whole)

    ckpt = load_checkpoint(model_pt)  # by hand: every image at once
    cache = TeacherCache.open(tmp_path / "cache", source=source, grids=(1, 2, 3, 4))
    images = torch.stack([CropDataset(source, 64)[i][1] for i in range(8)])
    with torch.no_grad():
        out = ckpt.build_student()(normalize(images, ckpt.preprocess), mask_ratio=0.0)
    weights = seen_view_weights(view_patch_weights(64, 8), None, 8)
    want = region_loss(out.segments, out.assignment, weights, cache.features(torch.arange(8)).float())
    assert whole == pytest.approx(float(want), rel=1e-4)
    other = tmp_path / "other"
    write_scenes(other, n=3, seed=9, size=64, val_fraction=0.0)
    with pytest.raises(ZerosegError):
        heldout_loss(model_pt, other / "JPEGImages", tmp_path / "cache")
