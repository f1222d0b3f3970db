"""The self-self attention baselines (ClearCLIP, SCLIP, NACLIP): their last block by hand, the
Gaussian window, and `--method clearclip|sclip|naclip` in `zeroseg segment` / `zeroseg eval`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_clip import TINY_CFG, last_block_input, tiny_clip

from zeroseg.bundled import bundled_teacher
from zeroseg.classes import resolve_templates
from zeroseg.data.voc import VOCDataset
from zeroseg.evaluation.evaluate import evaluate
from zeroseg.infer.factory import BASELINES, METHODS, baseline_mode
from zeroseg.infer.maskclip import MaskCLIPSegmenter
from zeroseg.infer.maskclip_tower import MODES, value_branch
from zeroseg.infer.self_attention import NACLIP_SIGMA, SELF_SELF_MODES, gaussian_window, self_self_attention
from zeroseg.shapeworld.write import write_scenes
from zeroseg.teacher.clip import Teacher
from zeroseg.text import Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")


def _vision(**extra) -> dict:
    return {**TINY_CFG["vision_cfg"], "patch_size": 8, **extra}


def _segmenter(model, mode: str) -> MaskCLIPSegmenter:
    cfg = {**TINY_CFG, "vision_cfg": {}}
    teacher = Teacher(model, spec="mem", name="mem", model_cfg=cfg, mean=(0.5,) * 3, std=(0.25,) * 3,
                      tokenizer_name="clip", context_length=16, fingerprint="mem")  # fmt: skip
    return MaskCLIPSegmenter(teacher, mode=mode, vocabulary=Vocabulary(teacher.text_encoder(), ("a {}.",)))


def _by_hand(block, h: torch.Tensor, mode: str, grid: tuple[int, int]) -> torch.Tensor:
    """The papers' last block written out head by head (nn.MultiheadAttention weights)."""
    d = h.shape[-1]
    heads = block.attn.num_heads
    y = F.layer_norm(h, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
    q, k, v = ((y @ w[i * d : (i + 1) * d].T + b[i * d : (i + 1) * d]) for i in range(3))
    split = [t.reshape(*t.shape[:2], heads, d // heads) for t in (q, k, v)]
    q, k, v = split
    scale = 1 / math.sqrt(d // heads)
    qq = torch.einsum("nihc,njhc->nhij", q, q) * scale
    kk = torch.einsum("nihc,njhc->nhij", k, k) * scale
    if mode == "clearclip":
        weights = qq.softmax(-1)
    elif mode == "sclip":
        weights = qq.softmax(-1) + kk.softmax(-1)
    else:  # naclip: the Gaussian on patch positions (class token: row and column 0 get nothing)
        ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
        dist2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
        omega = torch.zeros(h.shape[1], h.shape[1])
        omega[1:, 1:] = torch.exp(-dist2 / (2 * NACLIP_SIGMA**2))
        weights = (kk + omega).softmax(-1)
    out = torch.einsum("nhij,njhc->nihc", weights, v).reshape(h.shape)
    out = out @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    return h + out if mode == "sclip" else out  # ClearCLIP and NACLIP drop the residual; all drop the FFN


@pytest.mark.parametrize("mode", SELF_SELF_MODES)
def test_last_block_by_hand(mode):
    model = tiny_clip(seed=5, vision_cfg=_vision(pool_type="tok"))
    visual = model.visual
    seg = _segmenter(model, mode)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        h = last_block_input(visual, x)  # (N, 1 + 64, D): class token first
        want = (
            visual.ln_post(_by_hand(visual.transformer.resblocks[-1], h, mode, (8, 8))[:, 1:]) @ visual.proj
        )
    got = seg.dense_features(x)
    torch.testing.assert_close(got, want.reshape(2, 8, 8, -1), rtol=1e-4, atol=1e-5)
    for other in ("vv_res", *SELF_SELF_MODES):
        if other != mode:
            assert not torch.allclose(got, _segmenter(model, other).dense_features(x), atol=1e-3), other


@pytest.mark.parametrize(
    ("mode", "custom"),
    [("clearclip", False), ("clearclip", True), ("naclip", False), ("naclip", True), ("sclip", False)],
)
def test_one_token_attention_is_the_value_branch(mode, custom):
    """Over a single token every softmax is 1, so ClearCLIP's and NACLIP's branch is the value branch
    (with head scale, inner norm, ln_attn and LayerScale of custom blocks) and SCLIP's, whose two
    softmaxes sum to 2, is out_proj(2 v)."""
    extra = {"ls_init_value": 0.3, "scale_heads": True, "scale_attn_inner": True, "scale_attn": True}
    model = tiny_clip(seed=9, vision_cfg=_vision(**(extra if custom else {})))
    block = model.visual.transformer.resblocks[-1]
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
        y = torch.randn(6, 1, 64)
        got = self_self_attention(block, y, mode, (1, 1), 0)
        want = value_branch(block, y)
        if mode == "sclip":  # out_proj(2 v) = 2 out_proj(v) - its bias
            want = 2 * want - block.attn.out_proj.bias
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gaussian_window():
    w = gaussian_window((3, 4), 2.0, 1, "cpu")
    assert w.shape == (13, 13)
    assert torch.equal(w[0], torch.zeros(13)) and torch.equal(w[:, 0], torch.zeros(13))
    torch.testing.assert_close(w, w.T)
    torch.testing.assert_close(w[1:, 1:].diagonal(), torch.ones(12))
    assert w[1, 2].item() == pytest.approx(math.exp(-1 / 8))  # neighbours along a row: distance 1
    assert w[1, 5].item() == pytest.approx(math.exp(-1 / 8))  # (0,0) -> (1,0): one row down
    assert w[1, 12].item() == pytest.approx(math.exp(-(4 + 9) / 8))


def test_methods_and_modes():
    assert BASELINES == ("maskclip", *SELF_SELF_MODES) and METHODS == ("zeroseg", *BASELINES)
    assert set(SELF_SELF_MODES) <= set(MODES)
    assert baseline_mode("maskclip") is None and baseline_mode("naclip") == "naclip"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> VOCDataset:
    root = tmp_path_factory.mktemp("sw")
    write_scenes(root, n=3, seed=3, size=128, val_fraction=1.0)
    return VOCDataset(root, "val")


@pytest.mark.parametrize("method", SELF_SELF_MODES)
def test_cli_eval_and_segment_run_the_baseline(cli, scenes, tmp_path, method):
    run = cli("eval", "--method", method, "--teacher", "bundled", "--dataset", str(scenes.root), "-q",
              "--json", str(tmp_path / "m.json"))  # fmt: skip
    assert run.code == 0, run.err
    seg = MaskCLIPSegmenter.from_spec(
        str(bundled_teacher()), mode=method, templates=resolve_templates("shapeworld")
    )
    want = evaluate(seg, scenes, progress=False).miou
    got = json.loads((tmp_path / "m.json").read_text())
    assert got["method"] == method and got["mIoU"] == pytest.approx(want, abs=1e-9)
    out = tmp_path / "o"
    run = cli("segment", str(scenes.image_paths[0]), "--method", method, "--teacher", "bundled",
              "--labels", "red,green", "--out", str(out))  # fmt: skip
    assert run.code == 0, run.err
    assert any(out.iterdir())


def test_cli_refusals_name_the_method(cli, scenes, tmp_path):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    for args, expect in (
        (("segment", str(image), "--method", "sclip", "--engine", str(tmp_path), "--labels", "red",
          "--out", str(tmp_path / "o")), "does not combine with --method sclip"),
        (("eval", "--method", "naclip", "--dataset", str(scenes.root)), "--method naclip needs --teacher"),
        (("eval", "--method", "clearclip", "--teacher", "bundled", "--dataset", str(scenes.root),
          "--head", "dense"), "clearclip's head is always dense"),
        (("eval", "--method", "mask", "--teacher", "bundled", "--dataset", str(scenes.root)),
         "zeroseg, maskclip, clearclip, sclip, naclip"),
    ):  # fmt: skip
        run = cli(*args)
        assert run.code != 0 and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1, (
            run.err
        )
        assert expect in run.err, run.err
    assert not (tmp_path / "o").exists()
