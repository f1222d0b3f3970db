"""The paper-sized student (preset `base`: ViT-B/16, random weights) exported at 448 and gated."""

from __future__ import annotations

import export_helpers as eh
import helpers
import pytest
import torch

from zeroseg.checkpoint import CheckpointConfig, save_checkpoint
from zeroseg.export.core import parity
from zeroseg.export.core.manifest import read_manifest
from zeroseg.model.config import student_preset
from zeroseg.model.student import ZeroSegStudent
from zeroseg.preprocess import Preprocess

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_base_preset_exports_at_448_and_passes_the_gate(world, tmp_path):
    cfg = student_preset("base", out_dim=world.teacher.embed_dim)
    torch.manual_seed(0)
    state = ZeroSegStudent(cfg).state_dict()
    config = CheckpointConfig(
        student=cfg,
        preprocess=Preprocess(train_size=224, test_short_side=448),
        templates=tuple(helpers.TEMPLATES),
        logit_scale=world.teacher.logit_scale,
        teacher={"name": "tiny"},
    )
    ckpt = tmp_path / "base.pt"
    save_checkpoint(ckpt, config=config, student=state, text=world.teacher.text_state(), inference_only=True)
    del state
    with helpers.torch_threads(2):
        out, lines = eh.export(ckpt, tmp_path / "bundle", threads=2)
    m = read_manifest(out)
    assert m.preprocess["short_side"] == 448 and m.preprocess["patch_multiple"] == 16
    assert m.model["student"]["embed_dim"] == 768 and m.model["student"]["depth"] == 12
    assert any(c["input_hw"] == [448, 448] for c in m.parity["cases"])
    assert m.parity["segmenter"]["pixel_agreement"] >= parity.FP32_AGREEMENT
    assert m.parity["image_encoder"]["embeddings_max_abs_error"] < 1e-3
    assert not m.graphs["image_encoder"]["external_data"]  # well below 2 GB: weights inside the .onnx
    assert (out / "image_encoder.onnx").stat().st_size > 300e6
