"""Shared fixtures for the segment / eval / checkpoint tests: a small real checkpoint and a CLI runner.

The checkpoint is what `zeroseg train` writes, minus the training: a randomly initialised tiny
student (seeded) and the text tower of a tiny random open_clip CLIP, saved with `save_checkpoint`.
It is built once per test process (`world`), however many modules import the fixture.

Register them in a test module by assigning them to module names (a plain import would trip ruff's
F811):
    world, cli, one_thread = fixtures.world, fixtures.cli, fixtures.one_thread
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_clip import TINY_CFG, tiny_clip

from zeroseg import cli as zeroseg_cli
from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
from zeroseg.model.config import StudentConfig, student_preset
from zeroseg.model.student import ZeroSegStudent
from zeroseg.preprocess import Preprocess
from zeroseg.teacher.clip import Teacher, load_teacher, save_teacher

#: Inference short side stored in the test checkpoint (small, so CPU runs stay fast).
SHORT_SIDE = 64
TEMPLATES = ["a photo of a {}.", "a picture of a {}."]


@dataclass(frozen=True)
class World:
    root: Path
    teacher: Teacher
    checkpoint: Path  # inference defaults: none (bg_thresh 0.5, no background prompt)
    student_cfg: StudentConfig
    student_state: dict[str, torch.Tensor]
    config: CheckpointConfig


def make_config(student_cfg: StudentConfig, teacher: Teacher, **inference) -> CheckpointConfig:
    """The config `zeroseg train` stores, for this student and teacher (inference: bg_thresh, bg_prompt)."""
    return CheckpointConfig(
        student=student_cfg,
        preprocess=Preprocess(train_size=student_cfg.image_size, test_short_side=SHORT_SIDE),
        templates=tuple(TEMPLATES),
        logit_scale=teacher.logit_scale,
        teacher={"name": "tiny"},
        **inference,
    )


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch ops on `n` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run a tiny model: one thread is as fast as two on a quiet machine, and over ten
    times faster when another process keeps the two cores busy (OpenMP threads then spin-wait)."""
    with torch_threads(1):
        yield


@functools.cache
def _build_world(base: Path) -> World:
    with torch_threads(1):
        return _make_world(base)


def _make_world(base: Path) -> World:
    root = base / "zeroseg_world"
    root.mkdir(parents=True, exist_ok=True)
    save_teacher(root / "teacher.pt", tiny_clip(seed=0), name="tiny", model_cfg=TINY_CFG)
    teacher = load_teacher(str(root / "teacher.pt"))
    torch.manual_seed(1234)
    student_cfg = student_preset("tiny", out_dim=teacher.embed_dim)
    student = ZeroSegStudent(student_cfg).eval()
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    config = make_config(student_cfg, teacher)
    save_checkpoint(root / "ckpt.pt", config=config, student=state, text=teacher.text_state())
    return World(root, teacher, root / "ckpt.pt", student_cfg, state, config)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """A tiny teacher and a checkpoint built from it (read-only: copy before damaging)."""
    return _build_world(tmp_path_factory.getbasetemp())


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the `zeroseg` console entry point (`zeroseg.cli.main`) in-process: cli("segment", ...).

    Goes through `run_app`, so a ZerosegError becomes "error: ..." on stderr and exit status 2, as in
    the installed script; any other exception propagates (a bug: the test fails with its traceback).
    """

    def run(*args) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["zeroseg", *(str(a) for a in args)])
        code = 0
        try:
            zeroseg_cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit status 2, one "error: ..." line on stderr naming every fragment, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
