"""Same seed, same host, same thread count -> the same teacher cache and the same trained tensors.

The ShapeWorld proof compares seeds, so a seed must mean one run: the teacher cache is rebuilt and
a `shapeworld`-preset student (Gumbel noise on, the bundled recipe's region loss, masking off) and
a `tiny` one (MAE masking on) are trained twice through the CLI, and every cache array and every
checkpoint tensor must be equal bit for bit. A different seed must change the weights (so the test
can fail). Across hosts and thread counts floats are not expected to match (README, the proof).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from zeroseg.bundled import bundled_teacher
from zeroseg.checkpoint import load_checkpoint
from zeroseg.shapeworld.write import write_scenes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    write_scenes(root / "scenes", n=12, seed=5, size=64, val_fraction=0.0)
    return root / "scenes" / "JPEGImages"


def _cache(cli, scenes, out):
    run = cli("cache-teacher", "--data", scenes, "--teacher", bundled_teacher(), "--out", out,
              "--image-size", "64", "--grids", "1,2", "--batch-size", "4", "--no-progress")  # fmt: skip
    assert run.code == 0, run.err
    return out


def _train(cli, scenes, cache, out, *, preset: str, seed: int, extra=()):
    run = cli("train", "--data", scenes, "--teacher-cache", cache, "--out", out,
              "--preset", preset, "--steps", "4", "--batch-size", "4", "--seed", str(seed),
              "--log-every", "1", "--grids", "1,2", *extra)  # fmt: skip
    assert run.code == 0, run.err
    return load_checkpoint(out / "model.pt").student


def _host() -> str:
    """The CPU and MKL's reproducibility mode, for the failure message (the runs differ by host)."""
    from zeroseg.bench.env import cpu_flags, cpu_model

    mode, threads = os.environ.get("MKL_CBWR"), torch.get_num_threads()
    return f"{cpu_model()} ({','.join(cpu_flags())}), MKL_CBWR={mode}, {threads} threads"


def _difference(x: np.ndarray, y: np.ndarray) -> str:
    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
    return f"{int((diff > 0).sum())} of {diff.size} values differ, by at most {diff.max():.3g}"


def _files(folder):
    return {p.relative_to(folder): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_cache_and_the_same_weights(cli, scenes, tmp_path) -> None:
    assert os.environ.get("MKL_CBWR"), "import zeroseg sets MKL's reproducible mode (zeroseg/__init__.py)"
    first, second = _cache(cli, scenes, tmp_path / "c1"), _cache(cli, scenes, tmp_path / "c2")
    a, b = _files(first), _files(second)
    assert a.keys() == b.keys() and a
    arrays = [k for k in a if k.suffix == ".npy"]
    assert arrays, a.keys()
    for key in arrays:
        x, y = np.load(a[key], mmap_mode="r"), np.load(b[key], mmap_mode="r")
        assert x.shape == y.shape, (key, x.shape, y.shape)
        assert np.array_equal(x, y), f"{key}: {_difference(x, y)} on {_host()}"
    for preset, extra in (("shapeworld", ("--region-weight", "1")), ("tiny", ())):
        one = _train(cli, scenes, first, tmp_path / f"{preset}-1", preset=preset, seed=0, extra=extra)
        two = _train(cli, scenes, second, tmp_path / f"{preset}-2", preset=preset, seed=0, extra=extra)
        other = _train(cli, scenes, first, tmp_path / f"{preset}-3", preset=preset, seed=1, extra=extra)
        assert one.keys() == two.keys()
        for name in one:
            assert torch.equal(one[name], two[name]), (
                f"{preset} {name}: {_difference(one[name].numpy(), two[name].numpy())} on {_host()}"
            )
        assert any(not torch.equal(one[n], other[n]) for n in one), f"{preset}: seed 1 changed nothing"


@pytest.mark.parametrize("preset", [None, "COMPATIBLE"])
def test_import_puts_mkl_in_its_reproducible_mode_unless_the_user_chose(preset, monkeypatch) -> None:
    """`import zeroseg` sets MKL_CBWR=AUTO when it is unset and keeps a value the user chose (MKL
    reads it at its first call; `MKL_VERBOSE=1` then prints `CNR:AUTO` on every call: README)."""
    import importlib

    import zeroseg

    monkeypatch.delenv("MKL_CBWR", raising=False)
    if preset:
        monkeypatch.setenv("MKL_CBWR", preset)
    importlib.reload(zeroseg)
    assert os.environ["MKL_CBWR"] == (preset or "AUTO")
