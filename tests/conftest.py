"""Test-wide settings.

Triton kernels are tested on the CPU through Triton's interpreter, which must be switched on before
`triton` is first imported; set ZEROSEG_TEST_GPU=1 to run them compiled on a CUDA device instead.
"""

import os

if os.environ.get("ZEROSEG_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# under pytest-xdist each worker gets one core; alone, the suite uses two
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


# ---- a random tiny checkpoint + teacher pair shared by the bench and demo tests ----------------
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@dataclass(frozen=True)
class Assets:
    checkpoint: Path
    teacher: Path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    """A random tiny student checkpoint and the tiny open_clip teacher whose text tower it holds."""
    from tiny_clip import tiny_clip

    from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
    from zeroseg.model.config import student_preset
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.preprocess import Preprocess
    from zeroseg.teacher.clip import load_teacher, save_teacher

    root = tmp_path_factory.mktemp("bench_assets")
    save_teacher(root / "teacher.pt", tiny_clip(seed=0), name="tiny")
    teacher = load_teacher(str(root / "teacher.pt"))
    torch.manual_seed(0)
    cfg = student_preset("tiny", out_dim=teacher.embed_dim)
    config = CheckpointConfig(
        student=cfg,
        preprocess=Preprocess(train_size=cfg.image_size, test_short_side=32),
        templates=("a photo of a {}.", "a {}."),
        logit_scale=teacher.logit_scale,
        teacher={"name": "tiny"},
    )
    state = ZeroSegStudent(cfg).state_dict()
    save_checkpoint(root / "ckpt.pt", config=config, student=state, text=teacher.text_state())
    return Assets(root / "ckpt.pt", root / "teacher.pt")
