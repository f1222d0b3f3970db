"""The ShapeWorld proof: does label-free distillation give a segmenter? Recipe + score table.

    python -m zeroseg.shapeworld.proof --work runs/shapeworld            # recipe + table
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --bundle   # + zeroseg/assets

Every step runs the public `zeroseg` commands and is skipped when its output already exists, so an
interrupted run resumes. Scenes: train (seed 1, 1,000), tune (seed 777, 50), val (seed 999, 200);
a tiny open_clip CLIP pretrained on captioned single shapes; its 30 grid views cached; a
`shapeworld` student (tiny, one grouping stage, no masking) distilled with the region loss in place
of the segment matching (README, ShapeWorld findings). Inference settings (short side, background
threshold, "background" prompt) are chosen for each method on the same grid on *tune* and scored
once on held-out *val*:

(i) the trained student, (ii) the same student untrained, (iii) the MaskCLIP-style baseline on the
same teacher, (iv) an oracle: the teacher naming each ground-truth object's crop.
Results go to `<work>/proof.json` and `<work>/proof.md`; `--bundle` writes the fp16, inference-only
student, the teacher and the table into `zeroseg/assets` (the model the bench and the demo use).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zeroseg.data.voc import VOCDataset
from zeroseg.evaluation.evaluate import evaluate
from zeroseg.evaluation.metrics import chance_mious
from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json

SPLITS = {"train": (1, 1000, 0.0), "tune": (777, 50, 1.0), "val": (999, 200, 1.0)}
TEACHER_STEPS = 176  # the bundled teacher: 176 steps (a 120 s budget on a loaded 2-core CPU)
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)
SHORT_SIDES = (128, 256)  # the scenes' own size and 2x; both methods gain from 2x on tune
TRAIN_ARGS = (
    "--preset shapeworld --steps {steps} --batch-size 32 --lr 1e-3 --loss-weights 1,0,1"
    " --region-weight {region} --templates shapeworld --test-short-side 128 --bg-prompt"
    " --log-every 50 --seed 0"
)


def _zeroseg(*args: str) -> None:
    cmd = [sys.executable, "-m", "zeroseg", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(
            f"zeroseg.shapeworld.proof: `zeroseg {args[0]}` failed (see above); fix it and rerun to resume"
        )


def recipe(work: Path, steps: int, region: float) -> None:
    """Data, teacher, cache and student; each step skipped when its output exists."""
    for name, (seed, n, val) in SPLITS.items():
        if not (work / name / "dataset.json").is_file():
            _zeroseg("synth", "--out", str(work / name), "--kind", "scenes", "--n", str(n),
                     "--seed", str(seed), "--val-fraction", str(val), "-q", "--overwrite")  # fmt: skip
    if not (work / "teacher.pt").is_file():
        _zeroseg("pretrain-teacher", "--out", str(work / "teacher.pt"), "--steps", str(TEACHER_STEPS), "-q")
    if not (work / "cache" / "manifest.json").is_file():
        _zeroseg("cache-teacher", "--data", str(work / "train" / "JPEGImages"), "--teacher",
                 str(work / "teacher.pt"), "--out", str(work / "cache"), "--image-size", "128",
                 "--workers", "1", "--no-progress")  # fmt: skip
    if not (work / "student" / "model.pt").is_file():
        _zeroseg("train", "--data", str(work / "train" / "JPEGImages"), "--teacher-cache",
                 str(work / "cache"), "--out", str(work / "student"), "-q",
                 *TRAIN_ARGS.format(steps=steps, region=region).split())  # fmt: skip
    # the untrained student: the same recipe, one step at learning rate 0 (the initial weights)
    if not (work / "untrained" / "model.pt").is_file():
        _zeroseg("train", "--data", str(work / "train" / "JPEGImages"), "--teacher-cache",
                 str(work / "cache"), "--out", str(work / "untrained"), "-q",
                 *TRAIN_ARGS.format(steps=1, region=region).split(), "--lr", "0")  # fmt: skip


def tuned(make_segmenter, tune: VOCDataset, val: VOCDataset) -> dict:
    """Pick (short side, bg_thresh, bg_prompt) on tune by mIoU, then score val once with it.

    make_segmenter(short_side) builds the method at one inference resolution.
    """
    best = (-1.0,)
    for side in SHORT_SIDES:
        segmenter = make_segmenter(side)
        for prompt in (True, False):
            for thresh in THRESHOLDS:
                miou = evaluate(segmenter, tune, bg_thresh=thresh, bg_prompt=prompt, progress=False).miou
                if miou > best[0]:
                    best = (miou, side, thresh, prompt, segmenter)
    miou, side, thresh, prompt, segmenter = best
    report = evaluate(segmenter, val, bg_thresh=thresh, bg_prompt=prompt, progress=False)
    return {"mIoU": report.miou, "tune_mIoU": miou, "short_side": side, "bg_thresh": thresh,
            "bg_prompt": prompt, "per_class_IoU": report.to_dict()["per_class_IoU"]}  # fmt: skip


@torch.no_grad()
def oracle(teacher_spec: str, val: VOCDataset, templates) -> dict:
    """The teacher names the crop of every ground-truth object; background pixels stay background."""
    from zeroseg.evaluation.metrics import SegmentationMeter
    from zeroseg.teacher.clip import load_teacher
    from zeroseg.text import Vocabulary

    teacher = load_teacher(teacher_spec)
    text = Vocabulary(teacher.text_encoder(), templates)([list(c) for c in val.class_synonyms[1:]])
    meter = SegmentationMeter(val.num_classes)
    for i in range(len(val)):
        image, mask, item = val[i]
        inst = np.asarray(Image.open(val.root / "SegmentationObject" / f"{item}.png"))
        pred = np.zeros_like(mask, dtype=np.int64)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        for k in (v for v in np.unique(inst) if v not in (0, 255)):
            ys, xs = np.nonzero(inst == k)
            crop = pixels[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            feat = teacher.encode_images(crop[None])
            pred[inst == k] = 1 + int((feat @ text.T).argmax())
        meter.update(pred, mask)
    return {"mIoU": meter.miou()}


def prove(work: Path) -> dict:
    """Score (i)-(iv) on val with settings picked on tune; write proof.json and proof.md."""
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.infer.maskclip import MaskCLIPSegmenter
    from zeroseg.infer.segmenter import Segmenter
    from zeroseg.teacher.clip import load_teacher

    tune, val = VOCDataset(work / "tune", "val"), VOCDataset(work / "val", "val")
    trained = load_checkpoint(work / "student" / "model.pt", with_train_state=False)
    untrained = load_checkpoint(work / "untrained" / "model.pt", with_train_state=False)
    templates = trained.templates
    teacher = load_teacher(str(work / "teacher.pt"))
    rows = {
        "trained student": tuned(lambda side: Segmenter(trained, short_side=side), tune, val),
        "untrained student": tuned(lambda side: Segmenter(untrained, short_side=side), tune, val),
        "MaskCLIP baseline (same teacher)": tuned(
            lambda side: MaskCLIPSegmenter(teacher, short_side=side, templates=templates), tune, val
        ),
        "oracle: teacher names GT crops": oracle(str(work / "teacher.pt"), val, templates),
    }
    masks = [val.load_mask(i) for i in range(len(val))]
    counts = np.bincount(np.concatenate([m[m != 255] for m in masks]), minlength=val.num_classes)
    all_background = chance_mious(counts[: val.num_classes])[0]
    result = {"val_images": len(val), "classes": list(val.class_names), "rows": rows,
              "all_background_mIoU": all_background}  # fmt: skip
    atomic_write_json(work / "proof.json", result)
    atomic_write_bytes(work / "proof.md", markdown(result).encode())
    return result


def markdown(result: dict) -> str:
    """The proof table as Markdown."""
    lines = [
        "| method | val mIoU | tune mIoU | short side | bg threshold | bg prompt |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result["rows"].items():
        lines.append(
            f"| {name} | {r['mIoU']:.3f} | {r.get('tune_mIoU', float('nan')):.3f} |"
            f" {r.get('short_side', '-')} | {r.get('bg_thresh', '-')} | {r.get('bg_prompt', '-')} |"
        )
    return "\n".join(lines) + "\n"


def bundle(work: Path) -> None:
    """fp16 inference-only student with its tuned background settings, the teacher and the table."""
    from zeroseg.checkpoint import load_checkpoint, save_checkpoint
    from zeroseg.shapeworld.bundled import ASSETS, CHECKPOINT_NAME, PROOF_NAME, TEACHER_NAME

    result = json.loads((work / "proof.json").read_text())
    best = result["rows"]["trained student"]
    ckpt = load_checkpoint(work / "student" / "model.pt", with_train_state=False)
    config = ckpt.config.replace(
        bg_thresh=best["bg_thresh"],
        bg_prompt=best["bg_prompt"],
        preprocess=dataclasses.replace(ckpt.preprocess, test_short_side=best["short_side"]),
    )
    save_checkpoint(ASSETS / CHECKPOINT_NAME, config=config, student=ckpt.student, text=ckpt.text,
                    inference_only=True, dtype=torch.float16)  # fmt: skip
    shutil.copyfile(work / "teacher.pt", ASSETS / TEACHER_NAME)
    atomic_write_json(ASSETS / PROOF_NAME, result)
    print(f"bundled into {ASSETS}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/shapeworld"), help="working folder")
    parser.add_argument("--steps", type=int, default=400, help="student training steps")
    parser.add_argument("--region-weight", type=float, default=1.0, help="weight of the region loss")
    parser.add_argument("--bundle", action="store_true", help="write the result into zeroseg/assets")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    recipe(args.work, args.steps, args.region_weight)
    print(markdown(prove(args.work)))
    if args.bundle:
        bundle(args.work)


if __name__ == "__main__":
    main()
