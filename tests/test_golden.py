"""Golden-output regression tests (open_clip's test_inference.py, timm's test_model_inference /
test_model_backward): numbers that a numerically neutral refactor must not move.

- seeded `tiny` / `shapeworld` students: initialisation and `segment()` outputs on fixed scenes;
- the bundled checkpoint through the public `Segmenter` call: labels and segment probabilities;
- the bundled model's mIoU on a fixed 20-scene val split (its proof number, pinned);
- every preset: one training step through `zeroseg_loss` gives every parameter a gradient.

The golden files under tests/data/golden/ are written by `tests/data/make_golden.py` from the recipes
in tests/golden_util.py. A failure here after a refactor is a regression; regenerate only after an
intended numerical change (see make_golden.py's docstring).

Tolerances. Every comparison below was checked bit-exact between 1 and 2 torch threads on the CI
machine, so the margins only absorb other CPUs / BLAS builds (summation order, FMA):
- segment tokens: atol 1e-4 (values are O(1); float32 reordering moves them by ~1e-6, while any real
  change such as a different init order, a new layer or another normalisation moves them by >1e-2);
- one-hot assignment maps, segment labels: exact (an argmax flip would also move the tokens far past
  1e-4, so a looser check would not be a stable one either);
- bundled labels: >= 99.9 % pixel agreement per scene (the bilinear upsampling's argmax may flip a
  few pixels on exact ties; 0.1 % of 128x128 is 16 pixels); segment_probs: atol 1e-4;
- mIoU on the val split: within 0.005 of the recorded value (a 16-pixel flip moves it by ~1e-4;
  JPEG decoding of the written split may differ slightly across Pillow/libjpeg builds).
"""

from __future__ import annotations

import math

import golden_util as g
import numpy as np
import pytest
import torch

from zeroseg.model.config import PRESETS
from zeroseg.preprocess import Preprocess
from zeroseg.teacher.views import PAPER_GRIDS, num_views, view_patch_weights
from zeroseg.train.losses import LossWeights
from zeroseg.train.step import Objective, train_step

EMBED_ATOL = 1e-4
PROB_ATOL = 1e-4
LABEL_AGREEMENT = 0.999
MIOU_TOL = 0.005
#: init fingerprints (float64 sums of float32 tensors): relative tolerance
INIT_RTOL = 1e-6

REGENERATE = (
    "if the change is intended, rerun `.venv/bin/python tests/data/make_golden.py` and review the diff"
)


@pytest.fixture(scope="module")
def meta() -> dict:
    return g.load_meta(g.GOLDEN_DIR)


@pytest.fixture(scope="module")
def student_golden() -> dict[str, np.ndarray]:
    return g.load_npz(g.GOLDEN_DIR / g.STUDENTS_NPZ)


@pytest.fixture(scope="module")
def bundled_golden() -> dict[str, np.ndarray]:
    return g.load_npz(g.GOLDEN_DIR / g.BUNDLED_NPZ)


@pytest.fixture(scope="module")
def bundled(meta):
    """The bundled checkpoint's Segmenter; refuses to compare against goldens of another checkpoint."""
    from zeroseg.bundled import bundled_checkpoint

    digest = g.file_sha256(bundled_checkpoint())
    assert digest == meta["bundled"]["checkpoint_sha256"], (
        f"the bundled checkpoint changed ({digest[:12]} != {meta['bundled']['checkpoint_sha256'][:12]}); "
        + REGENERATE
    )
    return g.bundled_segmenter()


def test_golden_files_are_complete_and_small() -> None:
    files = {p.name: p.stat().st_size for p in g.GOLDEN_DIR.iterdir() if p.is_file()}
    assert {g.STUDENTS_NPZ, g.BUNDLED_NPZ, g.META_JSON} <= set(files), files
    assert sum(files.values()) < 1_000_000, files


# ---------------------------------------------------------------- (a) seeded students


def _first_differences(got: dict, want: dict, limit: int = 5) -> list[str]:
    """Tensors whose fingerprint differs, in the model's creation order (so the first one named is
    where the RNG streams parted)."""
    out = []
    for name, (gshape, gs, ga) in got.items():
        if name not in want:
            out.append(f"{name}: new tensor")
            continue
        shape, s, a = want[name]
        if shape != gshape:
            out.append(f"{name}: shape {gshape} != {shape}")
        elif not (
            math.isclose(gs, s, rel_tol=INIT_RTOL, abs_tol=1e-6) and math.isclose(ga, a, rel_tol=INIT_RTOL)
        ):
            out.append(f"{name}: sum {gs:.6g} / |sum| {ga:.6g}, golden {s:.6g} / {a:.6g}")
    out += [f"{name}: missing" for name in want if name not in got]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


@pytest.mark.parametrize("preset", g.STUDENT_PRESETS)
def test_student_init_matches_golden(preset: str, meta: dict) -> None:
    """torch.manual_seed(0); ZeroSegStudent(cfg): the same tensors, in the same RNG order."""
    want = meta["students"]["presets"][preset]
    model = g.build_student(preset)
    assert model.cfg.to_dict() == want["config"], f"preset {preset!r} changed; " + REGENERATE
    diffs = _first_differences(g.init_fingerprint(model), want["init"])
    assert not diffs, (
        f"{preset}: seeded initialisation differs from the golden (a parameter created, initialised or "
        f"consuming the RNG in another order?): " + "; ".join(diffs)
    )


@pytest.mark.parametrize("preset", g.STUDENT_PRESETS)
def test_student_segment_matches_golden(preset: str, meta: dict, student_golden: dict) -> None:
    x, digest = g.student_input()
    assert digest == meta["students"]["input_sha256"], (
        "the ShapeWorld scenes changed (generator, not model); " + REGENERATE
    )
    got = g.student_outputs(preset, x)
    segments, maps = student_golden[f"{preset}_segments"], student_golden[f"{preset}_maps"]
    assert got["maps"].shape == maps.shape and got["segments"].shape == segments.shape
    owner, golden_owner = got["maps"].argmax(1), maps.argmax(1)
    agreement = float((owner == golden_owner).mean())
    assert np.array_equal(got["maps"], maps), (
        f"{preset}: assignment maps differ from the golden ({agreement:.2%} of patches agree)"
    )
    err = float(np.abs(got["segments"] - segments).max())
    assert err <= EMBED_ATOL, f"{preset}: segment tokens differ by up to {err:.3g} (atol {EMBED_ATOL})"


# ---------------------------------------------------------------- (b) the bundled checkpoint


def test_bundled_segmenter_matches_golden(bundled, meta: dict, bundled_golden: dict) -> None:
    settings = meta["bundled"]["settings"]
    got, digest = g.bundled_outputs(bundled, settings)
    assert digest == meta["bundled"]["input_sha256"], "the ShapeWorld scenes changed; " + REGENERATE
    labels = bundled_golden["labels"]
    assert got["labels"].shape == labels.shape
    agreement = [float((a == b).mean()) for a, b in zip(got["labels"], labels, strict=True)]
    figures = ", ".join(f"{a:.4%}" for a in agreement)
    assert min(agreement) >= LABEL_AGREEMENT, (
        f"bundled labels agree with the golden on {figures} of the pixels (need >= {LABEL_AGREEMENT:.1%})"
    )
    err = float(np.abs(got["segment_probs"] - bundled_golden["segment_probs"]).max())
    assert err <= PROB_ATOL, f"segment_probs differ by up to {err:.3g} (atol {PROB_ATOL})"
    want = bundled_golden["segment_labels"]
    assert np.array_equal(got["segment_labels"], want), (
        f"segment labels {got['segment_labels'].tolist()} != golden {want.tolist()}"
    )


# ---------------------------------------------------------------- (d) the proof number


def test_bundled_eval_reproduces_recorded_miou(bundled, meta: dict, tmp_path) -> None:
    recorded = meta["eval"]
    root = g.write_eval_split(tmp_path / "val")
    got = g.bundled_eval(bundled, root, meta["bundled"]["settings"])
    assert got["images"] == recorded["images"] == g.EVAL_N
    per_class = ", ".join(
        f"{k} {v:.3f} (golden {recorded['per_class_IoU'][k]:.3f})" for k, v in got["per_class_IoU"].items()
    )
    assert abs(got["mIoU"] - recorded["mIoU"]) <= MIOU_TOL, (
        f"bundled val mIoU {got['mIoU']:.4f} != recorded {recorded['mIoU']:.4f} (tol {MIOU_TOL}): {per_class}"
    )


# ---------------------------------------------------------------- (c) gradients reach every parameter


def _fast_size(name: str) -> int:
    """The preset's own training size, or 4x4 patches for big ones (base: 64 px; depth and widths kept)."""
    cfg = PRESETS[name]
    return cfg.image_size if cfg.image_size <= 128 else 4 * cfg.patch_size


def _expected_without_grad(model: torch.nn.Module) -> set[str]:
    """Parameters that legitimately get no gradient from a training step of this preset.

    Only one case: the MAE decoder (every `decoder.*` tensor, its mask token included) runs only when
    patches are masked. With mask_ratio == 0 (the `shapeworld` preset) forward returns
    reconstruction=None, zeroseg_loss adds no reconstruction term, and the decoder never enters the
    graph (it is also left out of inference-only checkpoints).
    """
    if model.cfg.mask_ratio > 0:
        return set()
    return {name for name, _ in model.named_parameters() if name.startswith("decoder.")}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_parameter_gets_a_finite_nonzero_gradient(preset: str) -> None:
    """One training step as zeroseg.train.loop takes it, with every loss term weighted (so every head,
    the region loss's straight-through assignment included, is in the graph); then backward."""
    size = _fast_size(preset)
    model = g.build_student(preset, image_size=size).train()  # seeded; masking and Gumbel noise follow
    cfg = model.cfg
    pre = Preprocess(train_size=size)
    images01 = torch.from_numpy(g.scenes(((0, 0), (0, 1)), size)).permute(0, 3, 1, 2).float() / 255
    views = torch.nn.functional.normalize(
        torch.randn(2, num_views(PAPER_GRIDS), cfg.out_dim, generator=torch.Generator().manual_seed(1)),
        dim=-1,
    )  # stand-in teacher features (unit-norm, like CLIP's)
    objective = Objective(
        preprocess=pre,
        weights=LossWeights(distill=1.0, match=1.0, reconstruction=1.0, region=1.0),
        match_mode="paper",
        norm_pix=cfg.norm_pix_loss,
        region_weights=view_patch_weights(size, cfg.patch_size, PAPER_GRIDS),
    )
    terms, _ = train_step(model, model, images01, views, objective)  # forward + backward
    for name in ("distill", "match", "region"):
        value = getattr(terms, name)
        assert torch.isfinite(value) and value > 0, f"{preset}: {name} loss is {float(value)}"
    assert torch.isfinite(terms.reconstruction)
    rec = float(terms.reconstruction.detach())
    assert (rec > 0) == (cfg.mask_ratio > 0), (
        f"{preset}: reconstruction loss {rec} with mask ratio {cfg.mask_ratio}"
    )

    exempt = _expected_without_grad(model)
    params = dict(model.named_parameters())
    assert exempt <= set(params)
    missing, nonfinite, zero = [], [], []
    for name, param in params.items():
        if not param.requires_grad or name in exempt:
            continue
        if param.grad is None:
            missing.append(name)
        elif not bool(torch.isfinite(param.grad).all()):
            nonfinite.append(name)
        elif not bool(param.grad.any()):
            zero.append(name)
    assert not (missing or nonfinite or zero), (
        f"{preset}: no gradient: {missing}; non-finite gradient: {nonfinite}; all-zero gradient: {zero}"
    )
    stale = sorted(n for n in exempt if params[n].grad is not None)
    assert not stale, f"{preset}: these now get gradients, drop them from _expected_without_grad: {stale}"
