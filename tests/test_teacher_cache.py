"""The teacher feature cache: CLI run, resume, refusal of mismatches, corrupt images, sharding, reading."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_clip import tiny_clip, write_images
from typer.testing import CliRunner

from zeroseg.cli import app
from zeroseg.data.sources import CropDataset, ImageSource
from zeroseg.errors import ZerosegError
from zeroseg.teacher.cache import DONE, TODO, UNREADABLE, build_cache
from zeroseg.teacher.cache_reader import TeacherCache
from zeroseg.teacher.load import load_teacher, save_teacher

SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_images(root / "data", 11, corrupt=("zz_broken.jpg",))
    save_teacher(root / "teacher.pt", tiny_clip(), name="tiny")
    save_teacher(root / "other.pt", tiny_clip(seed=3), name="tiny")
    return root


@pytest.fixture(scope="module")
def teacher(world):
    return load_teacher(str(world / "teacher.pt"))


@pytest.fixture(scope="module")
def reference(world, teacher):
    """An uninterrupted single-process float32 cache."""
    out = world / "reference"
    build_cache(
        ImageSource.open(world / "data"),
        teacher,
        out,
        image_size=SIZE,
        batch_size=4,
        dtype="float32",
        progress=False,
    )
    return np.load(out / "features.npy"), np.load(out / "status.npy")


def run_cli(*args: str):
    return CliRunner().invoke(app, ["cache-teacher", *args])


def cli_args(world, out, *extra, data=None, teacher=None):
    data, teacher = data or world / "data", teacher or world / "teacher.pt"
    return [
        "--data",
        str(data),
        "--teacher",
        str(teacher),
        "--out",
        str(out),
        "--image-size",
        str(SIZE),
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def test_cli_end_to_end(world, teacher, tmp_path):
    out = tmp_path / "c"
    result = run_cli(*cli_args(world, out))
    assert result.exit_code == 0, result.output
    assert "11/12 done, 1 unreadable skipped, 0 left" in result.output and "images/s" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "zeroseg-teacher-cache" and manifest["grids"] == [1, 2, 3, 4]
    assert manifest["teacher"]["fingerprint"] == teacher.fingerprint and manifest["dtype"] == "float16"
    assert manifest["counts"] == {"total": 12, "done": 11, "unreadable": 1, "todo": 0}
    assert manifest["keys"][-1] == "zz_broken.jpg" and len(manifest["signatures"]) == 12
    feats, status = np.load(out / "features.npy"), np.load(out / "status.npy")
    assert feats.shape == (12, 30, 64) and feats.dtype == np.float16
    assert status.tolist() == [DONE] * 11 + [UNREADABLE]
    np.testing.assert_allclose(np.linalg.norm(feats[:11].astype(np.float32), axis=-1), 1, atol=2e-3)
    ds = CropDataset(ImageSource.open(world / "data"), SIZE)
    want = teacher.encode_views(torch.stack([ds[i][1] for i in (0, 5)]))
    np.testing.assert_allclose(feats[[0, 5]].astype(np.float32), want.numpy(), atol=1e-3)
    again = run_cli(*cli_args(world, out))  # already complete: nothing to do
    assert again.exit_code == 0 and "this run 0 images" in again.output


class Interrupt:
    """A teacher that is 'killed' (KeyboardInterrupt) on its n-th batch."""

    def __init__(self, teacher, after: int):
        self._teacher, self._left = teacher, after

    def __getattr__(self, name):
        return getattr(self._teacher, name)

    def encode_views(self, *args, **kwargs):
        self._left -= 1
        if self._left < 0:
            raise KeyboardInterrupt
        return self._teacher.encode_views(*args, **kwargs)


def test_resume_after_interruption_matches_uninterrupted(world, teacher, reference, tmp_path):
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        build_cache(
            ImageSource.open(world / "data"),
            Interrupt(teacher, 2),
            out,
            image_size=SIZE,
            batch_size=4,
            dtype="float32",
            progress=False,
        )
    status = np.load(out / "status.npy")
    assert status.tolist() == [DONE] * 8 + [TODO] * 3 + [UNREADABLE]  # the broken one was seen first
    result = run_cli(*cli_args(world, out, "--dtype", "float32"))
    assert result.exit_code == 0, result.output
    assert "this run 3 images" in result.output
    feats, status = np.load(out / "features.npy"), np.load(out / "status.npy")
    ref_feats, ref_status = reference
    assert np.array_equal(status, ref_status)
    np.testing.assert_array_equal(feats[:8], ref_feats[:8])  # same batches as the reference run: bitwise
    np.testing.assert_allclose(feats, ref_feats, atol=1e-6, rtol=0)  # later batches differ in size only


def test_sharded_union_equals_single(world, teacher, reference, tmp_path):
    out = tmp_path / "c"
    source = ImageSource.open(world / "data")
    kwargs = {"image_size": SIZE, "batch_size": 4, "dtype": "float32", "progress": False}
    first = build_cache(source, teacher, out, rank=0, world_size=2, **kwargs)
    status = np.load(out / "status.npy")
    assert first.processed == 6 and set(np.flatnonzero(status != TODO).tolist()) == set(range(0, 12, 2))
    build_cache(source, teacher, out, rank=1, world_size=2, **kwargs)
    feats, status = np.load(out / "features.npy"), np.load(out / "status.npy")
    ref_feats, ref_status = reference
    assert np.array_equal(status, ref_status)
    np.testing.assert_allclose(feats, ref_feats, atol=1e-6, rtol=0)


def test_mismatches_are_refused(world, tmp_path):
    out = tmp_path / "c"
    assert run_cli(*cli_args(world, out, "--grids", "1,2")).exit_code == 0
    cases = [
        (cli_args(world, out), "has --grids \\[1, 2\\], not \\[1, 2, 3, 4\\]"),
        (cli_args(world, out, "--grids", "1,2", "--dtype", "float32"), "--dtype"),
        (cli_args(world, out, "--grids", "1,2", teacher=world / "other.pt"), "made by teacher"),
    ]
    for args, pattern in cases:
        result = run_cli(*args)
        assert isinstance(result.exception, ZerosegError), result.output
        assert "--overwrite" in str(result.exception)
        assert re.search(pattern, str(result.exception)), str(result.exception)
    data = tmp_path / "data"
    shutil.copytree(world / "data", data, copy_function=shutil.copy)  # new mtimes
    changed = cli_args(world, out, "--grids", "1,2", data=data)
    result = run_cli(*changed)  # same names, but copies have new mtimes
    assert isinstance(result.exception, ZerosegError) and "changed since" in str(result.exception)
    (data / "extra.png").write_bytes((data / "001.jpg").read_bytes())
    result = run_cli(*changed)
    assert "images differ" in str(result.exception) and "extra.png" in str(result.exception)
    result = run_cli(*changed, "--overwrite")
    assert result.exit_code == 0 and "12/13 done" in result.output


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--grids", "0,1"], "positive"),
        (["--grids", "1,-2"], "positive"),
        (["--grids", "2,3"], "include 1"),
        (["--image-size", "8"], "at least 16"),
        (["--dtype", "int8"], "--dtype"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_arguments(world, tmp_path, extra, pattern):
    result = run_cli(*cli_args(world, tmp_path / "c", *extra))
    assert isinstance(result.exception, ZerosegError) and pattern in str(result.exception)
    assert not (tmp_path / "c").exists()


def test_bad_data_and_teacher(world, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, pattern in [
        (cli_args(world, tmp_path / "c", data=tmp_path / "missing"), "not found"),
        (cli_args(world, tmp_path / "c", data=tmp_path / "empty"), "no images"),
        (cli_args(world, tmp_path / "c", teacher="ViT-Nope:openai"), "unknown teacher"),
    ]:
        result = run_cli(*args)
        assert isinstance(result.exception, ZerosegError) and pattern in str(result.exception)


def test_teacher_cache_open(world, teacher, reference):
    path = world / "reference"
    source = ImageSource.open(world / "data")
    cache = TeacherCache.open(
        path, source=source, teacher_fingerprint=teacher.fingerprint, grids=(1, 2, 3, 4), image_size=SIZE
    )
    assert len(cache) == 12 and cache.num_views == 30 and cache.embed_dim == 64
    assert cache.valid.tolist() == [True] * 11 + [False]
    got = cache.features(torch.tensor([3, 0]))
    assert got.dtype == torch.float32 and got.shape == (2, 30, 64)
    np.testing.assert_array_equal(got.numpy(), reference[0][[3, 0]])
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers re-map the file
    assert torch.equal(clone.features([1]), cache.features([1]))
    for kwargs, pattern in [
        ({"teacher_fingerprint": "tiny@0000"}, "made by teacher .* not tiny@0000: re-run cache-teacher"),
        ({"grids": (1, 2)}, "grids"),
        ({"image_size": 64}, "image size"),
    ]:
        with pytest.raises(ZerosegError, match=pattern):
            TeacherCache.open(path, **kwargs)
    with pytest.raises(ZerosegError, match="no teacher cache"):
        TeacherCache.open(world / "nothing")


def test_teacher_cache_open_partial(world, teacher, tmp_path):
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        build_cache(
            ImageSource.open(world / "data"),
            Interrupt(teacher, 1),
            out,
            image_size=SIZE,
            batch_size=4,
            progress=False,
        )
    with pytest.raises(ZerosegError, match="incomplete .*8 of 12"):
        TeacherCache.open(out)
    cache = TeacherCache.open(out, allow_partial=True)
    assert cache.valid.sum() == 4


@pytest.mark.skipif(
    shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun"
)
def test_torchrun_two_ranks_gloo(world, reference, tmp_path):
    """Two real ranks (gloo on the CPU) through the console script give the single-process cache."""
    exe = Path(sys.executable).parent
    out = tmp_path / "c"
    cmd = [
        str(exe / "torchrun"),
        "--nproc_per_node",
        "2",
        str(exe / "zeroseg"),
        "cache-teacher",
        *cli_args(world, out, "--dtype", "float32"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 ranks" in proc.stdout
    np.testing.assert_allclose(np.load(out / "features.npy"), reference[0], atol=1e-6, rtol=0)
    assert np.array_equal(np.load(out / "status.npy"), reference[1])
