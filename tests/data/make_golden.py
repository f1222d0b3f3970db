"""Regenerate the golden outputs that tests/test_golden.py compares against.

    .venv/bin/python tests/data/make_golden.py

Writes, under tests/data/golden/ (about 70 KB in all, byte-identical on a rerun that changes no number):

- students.npz: `{preset}_segments` float32 (2,8,64) and `{preset}_maps` uint8 (2,8,16,16) of
  `ZeroSegStudent(student_preset(preset)).eval().segment(x)` for the `tiny` and `shapeworld` presets,
  built right after `torch.manual_seed(0)`, on two normalised 128-px ShapeWorld scenes;
- bundled.npz: `labels` uint8 (3,128,128), `segment_probs` float32 (3,8) and `segment_labels` uint8
  (3,8) of `Segmenter(bundled_checkpoint())` on three 128-px scenes, the 6 colours + background, with
  the bg settings the ShapeWorld proof tuned (zeroseg/assets/shapeworld.json);
- golden.json: the recipe (seeds, sizes, settings), digests of the input pixels and of the bundled
  checkpoint, each student's config and per-tensor init fingerprint (shape, sum, sum |x|), and the
  bundled model's mIoU on a fixed 20-scene val split (seed 999), plus the library versions used.

Rerun it ONLY after an intended numerical change (a new init scheme or preset, a retrained bundled
model, a deliberate change to preprocessing, the head or the scene generator, a torch upgrade that
moves numbers beyond the tests' tolerances), then review the diff of golden.json and say why in the
commit. A golden test that fails after a refactor meant to be numerically neutral is a regression:
fix the code, do not regenerate. All recipes live in tests/golden_util.py, shared with the test.
Runs on one CPU thread in about 10 s.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import golden_util as g  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _clean(value):
    """JSON without NaN: nan -> None (a class absent from prediction and truth)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def main() -> None:
    torch.set_num_threads(1)
    from zeroseg.bundled import bundled_checkpoint

    meta: dict = {
        "generated_by": "tests/data/make_golden.py",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }

    # (a) seeded students
    x, digest = g.student_input()
    arrays: dict[str, np.ndarray] = {}
    students: dict = {}
    for preset in g.STUDENT_PRESETS:
        model = g.build_student(preset)
        students[preset] = {"config": model.cfg.to_dict(), "init": g.init_fingerprint(model)}
        for key, value in g.student_outputs(preset, x).items():
            arrays[f"{preset}_{key}"] = value
    meta["students"] = {
        "seed": g.STUDENT_SEED,
        "scenes": [list(s) for s in g.STUDENT_SCENES],
        "size": g.STUDENT_SIZE,
        "input_sha256": digest,
        "presets": students,
    }
    g.save_npz(g.GOLDEN_DIR / g.STUDENTS_NPZ, arrays)

    # (b) the bundled checkpoint on three scenes
    settings = g.bundled_settings()
    segmenter = g.bundled_segmenter()
    bundled, digest = g.bundled_outputs(segmenter, settings)
    g.save_npz(g.GOLDEN_DIR / g.BUNDLED_NPZ, bundled)
    meta["bundled"] = {
        "checkpoint_sha256": g.file_sha256(bundled_checkpoint()),
        "settings": settings,
        "scenes": [list(s) for s in g.BUNDLED_SCENES],
        "size": g.BUNDLED_SIZE,
        "input_sha256": digest,
    }

    # (d) the proof number on a fixed val split
    with tempfile.TemporaryDirectory() as tmp:
        scores = g.bundled_eval(segmenter, g.write_eval_split(Path(tmp) / "val"), settings)
    meta["eval"] = {"seed": g.EVAL_SEED, "n": g.EVAL_N, "size": g.EVAL_SIZE, **scores}

    path = g.GOLDEN_DIR / g.META_JSON
    path.write_text(json.dumps(_clean(meta), indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in g.GOLDEN_DIR.iterdir() if p.is_file())
    print(f"wrote {g.GOLDEN_DIR} ({total / 1024:.1f} KB): bundled val mIoU {scores['mIoU']:.4f}")


if __name__ == "__main__":
    main()
