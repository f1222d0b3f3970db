"""Recipes of the golden-output regression tests (open_clip's tests/util_test.py in spirit).

`tests/data/make_golden.py` runs these functions once and stores their outputs under
`tests/data/golden/`; `tests/test_golden.py` runs them again and compares. Keeping both sides in one
module means the test computes exactly what was recorded: a golden failure is a change in zeroseg (or
in torch / numpy), never a drift between the generator and the test.

Only public entry points are called: `student_preset` + `ZeroSegStudent.segment`, `generate_scene` /
`write_scenes`, `Segmenter(path)(images, classes, bg_thresh=..., bg_prompt=...)`, `evaluate`.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
STUDENTS_NPZ = "students.npz"
BUNDLED_NPZ = "bundled.npz"
META_JSON = "golden.json"

# --- (a) seeded random students ------------------------------------------------------------------
#: Presets whose seeded initialisation and eval forward pass are pinned.
STUDENT_PRESETS: tuple[str, ...] = ("tiny", "shapeworld")
#: torch.manual_seed right before ZeroSegStudent(cfg): the init's RNG consumption order is pinned.
STUDENT_SEED = 0
#: Input batch: ShapeWorld scenes (seed, index) at the presets' training size (128 px, 16x16 patches).
STUDENT_SCENES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1))
STUDENT_SIZE = 128

# --- (b) the bundled checkpoint on fixed scenes ----------------------------------------------------
#: Three scenes (seed, index) at ShapeWorld's native 128 px; seed 0 is the README demo's scene.
BUNDLED_SCENES: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (2, 0))
BUNDLED_SIZE = 128
#: Row of zeroseg/assets/shapeworld.json whose tuned inference settings the bundled model uses.
PROOF_ROW = "trained student"

# --- (d) the bundled model's proof number on a small val split -------------------------------------
#: The first 20 scenes of the proof's own val split (seed 999, all val), at 128 px.
EVAL_SEED = 999
EVAL_N = 20
EVAL_SIZE = 128


# ---------------------------------------------------------------------------------------- helpers


def sha256(*arrays: np.ndarray) -> str:
    """Digest of arrays' bytes, shapes and dtypes (identifies an input exactly)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def scenes(items: tuple[tuple[int, int], ...], size: int) -> np.ndarray:
    """uint8 (B, S, S, 3) ShapeWorld scene images."""
    from zeroseg.shapeworld.write import generate_scene

    return np.stack([generate_scene(seed, size, index=index).image for seed, index in items])


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed zip timestamps, so a rerun with equal numbers is byte-identical."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_meta(root: Path | None = None) -> dict[str, Any]:
    return json.loads(((root or GOLDEN_DIR) / META_JSON).read_text())


# ------------------------------------------------------------------------------------ (a) students


def student_input() -> tuple[torch.Tensor, str]:
    """The normalised (B,3,128,128) batch the students see, and the digest of its uint8 pixels."""
    from zeroseg.preprocess import Preprocess, normalize

    pixels = scenes(STUDENT_SCENES, STUDENT_SIZE)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255.0)
    return normalize(x, Preprocess()), sha256(pixels)


def build_student(preset: str, **overrides: Any) -> torch.nn.Module:
    """ZeroSegStudent of a preset, built right after torch.manual_seed(STUDENT_SEED)."""
    from zeroseg.model.config import student_preset
    from zeroseg.model.student import ZeroSegStudent

    cfg = student_preset(preset, **overrides)
    torch.manual_seed(STUDENT_SEED)
    return ZeroSegStudent(cfg)


def init_fingerprint(model: torch.nn.Module) -> dict[str, list]:
    """Per state-dict tensor: [shape, sum, sum of |x|] in float64 (pins the seeded initialisation)."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().double()
        out[name] = [list(t.shape), float(t.sum()), float(t.abs().sum())]
    return out


def student_outputs(preset: str, x: torch.Tensor) -> dict[str, np.ndarray]:
    """model.eval(); model.segment(x): segments float32 (B,m,E) and one-hot maps uint8 (B,m,h,w)."""
    model = build_student(preset).eval()
    out = model.segment(x)
    maps = out.maps.detach()
    if not bool(((maps == 0) | (maps == 1)).all()):
        raise AssertionError(
            f"{preset}: segment() maps are no longer one-hot; the golden stores them as uint8"
        )
    return {
        "segments": out.segments.detach().float().numpy().astype(np.float32),
        "maps": maps.numpy().astype(np.uint8),
    }


# ------------------------------------------------------------------------------ (b) bundled model


def bundled_settings() -> dict[str, Any]:
    """bg_thresh / bg_prompt the ShapeWorld proof tuned for the bundled student, and its class list.

    (The tuned short side, 256, is the bundled checkpoint's own default, so `Segmenter(path)` uses it.)
    """
    from zeroseg.bundled import ASSETS, PROOF_NAME
    from zeroseg.shapeworld.write import class_names

    row = json.loads((ASSETS / PROOF_NAME).read_text())["rows"][PROOF_ROW]
    return {
        "bg_thresh": float(row["bg_thresh"]),
        "bg_prompt": bool(row["bg_prompt"]),
        "classes": class_names("colour"),  # background first, then the 6 colours
    }


def bundled_segmenter():
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.infer.segmenter import Segmenter

    return Segmenter(bundled_checkpoint())


def bundled_outputs(segmenter, settings: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """The bundled model on BUNDLED_SCENES: labels uint8 (3,S,S), segment_probs float32 (3,m),
    segment_labels uint8 (3,m); and the digest of the input pixels."""
    pixels = scenes(BUNDLED_SCENES, BUNDLED_SIZE)
    classes = [[name] for name in settings["classes"][1:]]  # label 0 = background, as the demo does
    results = segmenter(
        [Image.fromarray(p) for p in pixels],
        classes,
        bg_thresh=settings["bg_thresh"],
        bg_prompt=settings["bg_prompt"],
    )
    names = list(results[0].class_names)
    if names != list(settings["classes"]):
        raise AssertionError(f"label space changed: {names} != {settings['classes']}")
    arrays = {
        "labels": np.stack([np.asarray(r.labels) for r in results]).astype(np.uint8),
        "segment_probs": np.stack([np.asarray(r.segment_probs) for r in results]).astype(np.float32),
        "segment_labels": np.stack([np.asarray(r.segment_labels) for r in results]).astype(np.uint8),
    }
    return arrays, sha256(pixels)


# ------------------------------------------------------------------------------- (d) proof number


def write_eval_split(root: Path) -> Path:
    from zeroseg.shapeworld.write import write_scenes

    write_scenes(root, n=EVAL_N, seed=EVAL_SEED, size=EVAL_SIZE, val_fraction=1.0)
    return root


def bundled_eval(segmenter, root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """mIoU (mmseg semantics) of the bundled model on the written val split, as `zeroseg eval` scores it."""
    from zeroseg.data.voc import VOCDataset
    from zeroseg.evaluation.evaluate import evaluate

    dataset = VOCDataset(root, "val")
    report = evaluate(
        segmenter, dataset, bg_thresh=settings["bg_thresh"], bg_prompt=settings["bg_prompt"], progress=False
    )
    return {
        "mIoU": report.miou,
        "images": int(report.settings["images"]),
        "per_class_IoU": {k: float(v) for k, v in report.to_dict()["per_class_IoU"].items()},
    }
