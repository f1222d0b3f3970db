"""The speed/quality frontier of the ShapeWorld proof: every method at every short side, scored and timed.

`python -m zeroseg.shapeworld.proof --frontier` (see `zeroseg.shapeworld.proof`) calls `frontier`:

* **Scores.** Every method is tuned *per short side* on the proof's grid (background threshold ×
  "background" prompt, picked on tune) and scored once on val and val2: the trained students (one
  per seed, in each design of `DESIGNS`, with the paper's head and our dense head) at
  `STUDENT_SIDES`, the training-free baselines (MaskCLIP, ClearCLIP, SCLIP, NACLIP on the same
  teacher and templates) at `BASELINE_SIDES` (up to 768). Each method's scores are kept in
  `<work>/scores/` and reused.
* **Latency.** Each setting (method, short side) runs at batch 1 on val scenes, at the proof's
  thread count, every setting once per round, rounds interleaved (`time_settings`), and its median
  is kept. The students run on every engine that can run here (PyTorch eager, ONNX Runtime,
  OpenVINO on an ONNX bundle exported per design and head from the median seed) and each setting
  keeps its fastest engine among those whose labels agree with PyTorch's on ≥ `GATE` of the
  pixels; the baselines run on PyTorch eager (their only engine).

The arithmetic (best mIoU within a budget, the targets) is `frontier_math`; the table and the
figure are `frontier_report`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeroseg.data.voc import VOCDataset
from zeroseg.shapeworld.tuning import tune_and_score_variants
from zeroseg.utils.atomic import atomic_write_json

#: short sides the students are scored at (the student at 768 attends over 9,216 tokens)
STUDENT_SIDES: tuple[int, ...] = (128, 256, 384, 512)
#: short sides the training-free baselines are scored at (their sliding windows grow linearly)
BASELINE_SIDES: tuple[int, ...] = (128, 256, 384, 512, 768)
#: the students' heads, as `Segmenter` names them
HEADS: tuple[str, ...] = ("paper", "dense")
#: the student designs: name -> `StudentConfig` fields replaced at inference ("": as trained).
#: "win16": the encoder attends in windows of the training grid (128 px / patch 8 = 16 patches,
#: `zeroseg.model.window`): at the training size that is the full attention the recipe trained, so
#: the same runs are its students, and its cost grows linearly with the pixels
DESIGNS: dict[str, dict[str, Any]] = {"": {}, "win16": {"attn_window": 16}}


def method_name(head: str, design: str) -> str:
    """The frontier's name of a student method: "student-dense", "student-dense-win16", ..."""
    return f"student-{head}" + (f"-{design}" if design else "")


def design_checkpoint(work: Path, run: Path, design: str) -> Path:
    """The run's model with the design's inference settings: model.pt itself for the trained design,
    else a copy with the student config changed, written once into `<work>/designs/<design>/`."""
    if not DESIGNS[design]:
        return run / "model.pt"
    path = work / "designs" / design / f"{run.parent.name}-{run.name}.pt"
    if not path.is_file():
        from zeroseg.checkpoint import load_checkpoint, save_checkpoint

        ckpt = load_checkpoint(run / "model.pt", with_train_state=False)
        config = ckpt.config.replace(student=dataclasses.replace(ckpt.student_config, **DESIGNS[design]))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, config=config, student=ckpt.student, text=ckpt.text, inference_only=True)
    return path


def score_sides(
    make: Callable[[int], Any], tune: VOCDataset, vals: dict[str, VOCDataset], sides: tuple[int, ...],
    variants: tuple[str, ...] = ("",), apply: Callable[[Any, str], None] = lambda _s, _v: None,
) -> dict[str, dict[str, dict]]:  # fmt: skip
    """variant -> short side (text) -> its settings picked on tune at that side and its val scores."""
    out: dict[str, dict[str, dict]] = {v: {} for v in variants}
    for side in sides:
        rows = tune_and_score_variants(make, tune, vals, variants=variants, apply=apply, short_sides=(side,))
        for variant in variants:
            out[variant][str(side)] = rows[variant]
    return out


def score_student(
    checkpoint: Path, tune: VOCDataset, vals: dict[str, VOCDataset], sides: tuple[int, ...] = STUDENT_SIDES
) -> dict[str, dict]:
    """head -> short side -> row for one student checkpoint at `sides`, both heads sharing the
    forwards."""
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.infer.segmenter import Segmenter

    ckpt = load_checkpoint(checkpoint, with_train_state=False)

    def set_head(segmenter: Segmenter, head: str) -> None:
        segmenter.head_mode = head

    return score_sides(lambda side: Segmenter(ckpt, short_side=side), tune, vals, sides, HEADS, set_head)


def score_runs(
    work: Path, runs: dict[int, Path], tune: VOCDataset, vals: dict[str, VOCDataset],
    sides: tuple[int, ...] = STUDENT_SIDES,
) -> dict[str, dict]:  # fmt: skip
    """method -> seed -> short side -> row of every run in every design and head at `sides`, each
    run's scores kept in `<work>/scores/` (`proof_score.stored`)."""
    from zeroseg.shapeworld.proof_score import stored

    students: dict[str, dict] = {}
    for design in DESIGNS:
        for seed, run in runs.items():
            checkpoint = design_checkpoint(work, run, design)
            rows = stored(work, f"frontier-{run.parent.name}-{run.name}" + (f"-{design}" if design else ""),
                          lambda c=checkpoint: score_student(c, tune, vals, sides), sides)  # fmt: skip
            for head in HEADS:
                students.setdefault(method_name(head, design), {})[str(seed)] = rows[head]
    return students


def score_baseline(method: str, teacher, templates, tune: VOCDataset, vals: dict[str, VOCDataset]) -> dict:
    """short side -> row for one training-free baseline on `teacher`."""
    from zeroseg.infer.factory import baseline_mode
    from zeroseg.infer.maskclip import MaskCLIPSegmenter

    def make(side: int) -> MaskCLIPSegmenter:
        return MaskCLIPSegmenter(teacher, short_side=side, templates=templates, mode=baseline_mode(method))

    return score_sides(make, tune, vals, BASELINE_SIDES)[""]


def _timing_spec(work: Path, students: dict, baselines: dict, runs: dict[int, Path], threads: int) -> dict:
    """What `zeroseg-bench frontier` times: the median seed's settings per student method (its
    model exported per design and head), every baseline's settings, five val scenes, the threads."""
    from zeroseg.shapeworld.frontier_math import miou

    dense = students[method_name("dense", "")]

    def best(seed: str) -> float:
        return max(miou({"seeds": dense}, seed, side, "val") for side in dense[seed])

    ranked = sorted(dense, key=lambda k: (best(k), int(k)))
    median = ranked[(len(ranked) - 1) // 2]
    val = VOCDataset(work / "val", "val")
    run = runs[int(median)]
    methods = {  # an export folder per model and head: a bundle is reused only for its own model
        method_name(head, design): {
            "checkpoint": str(design_checkpoint(work, run, design)),
            "head": head,
            "export": f"onnx-{head}" + (f"-{design}" if design else "") + f"-{run.parent.name}-{run.name}",
            "settings": students[method_name(head, design)][median],
        }
        for design in DESIGNS
        for head in HEADS
    }
    return {
        "threads": threads,
        "images": [str(p) for p in val.image_paths[:5]],
        "classes": [list(c) for c in val.class_synonyms],
        "export_dir": str(work / "frontier"),
        "student": {"seed": median, "methods": methods},
        "baselines": {"teacher": str(work / "teacher.pt"), "templates": None, "settings": baselines},
    }


def _time(work: Path, spec: dict) -> dict:
    """`zeroseg-bench frontier` on the spec in a fresh process (its result reused while the spec
    is unchanged): the exporters and runtimes live above the proof's layer."""
    folder = work / "frontier"
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out = folder / "spec.json", folder / "times.json"
    if out.is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec:
        return json.loads(out.read_text())
    atomic_write_json(spec_path, spec)
    cmd = [sys.executable, "-c", "from zeroseg.bench.cli import main; main()", "frontier", str(spec_path),
           "--json", str(out)]  # fmt: skip
    print("$ zeroseg-bench frontier", spec_path, flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("zeroseg.shapeworld.proof: `zeroseg-bench frontier` failed (see above)")
    return json.loads(out.read_text())


def frontier(work: Path, runs: dict[int, Path], *, threads: int, recipe: dict) -> dict[str, Any]:
    """Score every method per short side (kept in `<work>/scores/`), time every setting, and return
    the frontier result: methods with their scores and latencies, the budget tables, the targets."""
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.infer.factory import BASELINES
    from zeroseg.shapeworld.frontier_math import budget_table, targets
    from zeroseg.shapeworld.proof_score import VAL_SPLITS, stored
    from zeroseg.teacher.load import load_teacher

    tune = VOCDataset(work / "tune", "val")
    vals = {name: VOCDataset(work / name, "val") for name in VAL_SPLITS}
    students = score_runs(work, runs, tune, vals)
    templates = load_checkpoint(runs[min(runs)] / "model.pt", with_train_state=False).templates
    teacher = load_teacher(str(work / "teacher.pt"))
    baselines = {
        m: stored(
            work,
            f"frontier-{m}",
            lambda m=m: score_baseline(m, teacher, templates, tune, vals),
            BASELINE_SIDES,
        )  # fmt: skip
        for m in BASELINES
    }
    spec = _timing_spec(work, students, baselines, runs, threads)
    spec["baselines"]["templates"] = list(templates)
    times = _time(work, spec)
    methods = {
        method_name(head, design): {"kind": "student", "head": head, "design": design or "trained",
                                    "seeds": students[method_name(head, design)]}
        for design in DESIGNS
        for head in HEADS
    }  # fmt: skip
    methods.update({m: {"kind": "baseline", "seeds": {"all": rows}} for m, rows in baselines.items()})
    for name, method in methods.items():
        method["ms"] = times["methods"][name]["ms"]
        method["engine"] = times["methods"][name]["engine"]
        method["engines"] = times["methods"][name]["engines"]
    result = {"recipe": recipe, "splits": list(VAL_SPLITS), "timed_seed": spec["student"]["seed"],
              "methods": methods, "env": times["env"], "agreement": times["agreement"]}  # fmt: skip
    result["budget_table"] = {split: budget_table(result, split) for split in VAL_SPLITS}
    result["targets"] = {split: targets(result, split) for split in VAL_SPLITS}
    return result
