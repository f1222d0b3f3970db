"""Test-wide settings.

Triton kernels are tested on the CPU through Triton's interpreter, which must be switched on before
`triton` is first imported; set ZEROSEG_TEST_GPU=1 to run them compiled on a CUDA device instead.
"""

import os

if os.environ.get("ZEROSEG_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

import zeroseg  # noqa: E402,F401  (sets MKL's reproducible mode before MKL's first call: zeroseg/__init__.py)

# under pytest-xdist each worker gets one core; alone, the suite uses two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


# ---- the shared fixtures -------------------------------------------------------------------------
import helpers  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> helpers.World:
    """A tiny teacher and a checkpoint built from it (read-only: copy before damaging)."""
    return helpers.build_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    """Four 64-px ShapeWorld scenes in a VOC-layout folder (val fraction 0.5), written once per module."""
    from zeroseg.shapeworld.write import write_scenes

    root = tmp_path_factory.mktemp("small_voc")
    write_scenes(root / "voc", n=4, seed=2, size=64, val_fraction=0.5)
    return root / "voc"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module that runs a tiny model (`pytestmark = usefixtures(...)`): as fast
    as two on a quiet machine, and over ten times faster when another process keeps the two cores
    busy (OpenMP threads then spin-wait)."""
    with helpers.torch_threads(1):
        yield


@pytest.fixture
def cli(capsys, monkeypatch):
    """`zeroseg ARGS...` in-process (`zeroseg.cli.main`): cli("segment", ...) -> CliResult."""
    from zeroseg.cli import main

    return lambda *args: helpers.run_console(main, "zeroseg", args, capsys, monkeypatch)


@pytest.fixture
def bench_cli(capsys, monkeypatch):
    """`zeroseg-bench ARGS...` in-process (`zeroseg.bench.cli.main`)."""
    from zeroseg.bench.cli import main

    return lambda *args: helpers.run_console(main, "zeroseg-bench", args, capsys, monkeypatch)


@pytest.fixture
def export_cli(capsys, monkeypatch):
    """`zeroseg-export ARGS...` in-process (`zeroseg.export.cli.main`)."""
    from zeroseg.export.cli import main

    return lambda *args: helpers.run_console(main, "zeroseg-export", args, capsys, monkeypatch)


# ---- Ray: one loopback cluster per module of the "ray" xdist group --------------------------------


@pytest.fixture(scope="session")
def ray_home():
    """~/.ray as it was before this process started a Ray cluster, restored when the process ends.

    Starting a cluster writes an auth token there, and a process that started one expects the same
    token when it starts the next: deleting it between two modules' clusters kills the second GCS.
    """
    from pathlib import Path

    token_dir = Path.home() / ".ray"
    had_dir, had_token = token_dir.exists(), (token_dir / "auth_token").exists()
    yield token_dir
    if not had_token:
        (token_dir / "auth_token").unlink(missing_ok=True)
    if not had_dir and token_dir.exists() and not any(token_dir.iterdir()):
        token_dir.rmdir()


@pytest.fixture(scope="module")
def cluster(ray_home):
    """A local 2-CPU Ray cluster on 127.0.0.1 (asserted) for a whole module, Serve and Ray shut down at
    its end; modules that use it carry `pytest.mark.xdist_group("ray")`, so one runs at a time."""
    from zeroseg.serve.cluster import node_addresses, start_local

    start_local(num_cpus=2)
    import ray

    assert node_addresses() == ["127.0.0.1"]
    assert "node:127.0.0.1" in ray.cluster_resources()
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
