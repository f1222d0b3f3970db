"""Helpers shared by the tests (the fixtures themselves live in conftest.py).

`World` is what `zeroseg train` writes, minus the training: a randomly initialised tiny student
(seeded) and the text tower of a tiny random open_clip CLIP, saved with `save_checkpoint`; the
`world` fixture builds it once per test process. `run_console` runs a console entry point in-process
(`zeroseg`, `zeroseg-bench`, `zeroseg-export`) the way the installed scripts do.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tiny_clip import TINY_CFG, tiny_clip

from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
from zeroseg.model.config import StudentConfig, student_preset
from zeroseg.model.student import ZeroSegStudent
from zeroseg.preprocess import Preprocess
from zeroseg.teacher.clip import Teacher
from zeroseg.teacher.load import load_teacher, save_teacher

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

    @property
    def teacher_file(self) -> Path:
        """The tiny teacher as a teacher file (`--teacher`)."""
        return self.root / "teacher.pt"


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


@functools.cache
def build_world(base: Path) -> World:
    """The shared `World` under `base`, built once per process."""
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


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_console(main, prog: str, args, capsys, monkeypatch) -> CliResult:
    """Run console entry point `main` as `prog ARGS...` in-process; its exit code, stdout and stderr.

    Goes through the script's `run_app`, so a ZerosegError becomes "error: ..." on stderr and exit
    status 2, as in the installed script; any other exception propagates (a bug: the test fails with
    its traceback).
    """
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [prog, *(str(a) for a in args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit status 2, one "error: ..." line on stderr naming every fragment, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


def write_image(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    """A smooth random RGB image of `h` x `w` pixels saved at `path` (its folders created)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path)
    return path
