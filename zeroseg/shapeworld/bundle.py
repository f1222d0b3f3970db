"""The bundled model from the frontier: its choice written into `zeroseg/assets`.

    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --restarts 2 --frontier --bundle

`zeroseg.shapeworld.frontier_math.bundle_choice` picks the setting (design, head, short side) and
the median seed at it from `frontier.json`; `write_bundle` writes that seed's model, fp16 and
inference-only, with the frontier's setting recorded in the checkpoint: the head
(`CheckpointConfig.head`), the short side (`Preprocess.test_short_side`), the background threshold
and prompt, and the design (`StudentConfig.attn_window`). So `zeroseg segment bundled ...`,
`zeroseg.load("bundled")`, the exporters, the bench and the demo all run it as the frontier scored
it, by default. Next to it: the teacher, and `shapeworld.json` with the choice, the frontier's
targets and the rows the bench and the demo read (the student's and every training-free baseline's
tuned settings and val scores at the same short side).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from zeroseg.bundled import ASSETS, CHECKPOINT_NAME, PROOF_NAME, TEACHER_NAME
from zeroseg.errors import ZerosegError
from zeroseg.shapeworld.frontier import design_checkpoint
from zeroseg.shapeworld.frontier_math import bundle_choice
from zeroseg.shapeworld.proof_score import flat_row, run_name
from zeroseg.utils.atomic import atomic_path, atomic_write_json

#: shapeworld.json's row of the bundled student (the baselines' rows are named by their method)
STUDENT_ROW = "trained student"


def bundle_rows(result: dict, choice: dict, run: str) -> dict[str, dict]:
    """The student's row and every baseline's at the chosen short side (settings tuned there, val
    mIoU at the top: `proof_score.flat_row`)."""
    side = str(choice["short_side"])
    student = result["methods"][choice["method"]]["seeds"][choice["seed"]][side]
    rows = {STUDENT_ROW: {"seed": int(choice["seed"]), "run": run, "head": choice["head"],
                          "design": choice["design"], **flat_row(student)}}  # fmt: skip
    for name, method in result["methods"].items():
        if method["kind"] != "student" and side in method["seeds"]["all"]:
            rows[name] = flat_row(method["seeds"]["all"][side])
    return rows


def write_bundle(work: Path, result: dict, runs: dict[int, Path], assets: Path = ASSETS) -> dict:
    """Write the frontier's choice into `assets` (checkpoint, teacher, shapeworld.json); returns the
    choice.

    Args:
        work: the proof's working folder (the teacher, the design checkpoints).
        result: the frontier result (`frontier.json`) of the recipe that trained `runs`.
        runs: seed -> the seed's run folder (the run each seed's frontier scores are of).

    Raises:
        ZerosegError: the chosen seed has no run in `runs`.
    """
    from zeroseg.checkpoint import load_checkpoint, save_checkpoint

    choice = bundle_choice(result)
    run = runs.get(int(choice["seed"]))
    if run is None:
        raise ZerosegError(
            f"the frontier picked seed {choice['seed']}, which has no run here: rerun --frontier"
        )
    design = "" if choice["design"] == "trained" else choice["design"]
    ckpt = load_checkpoint(design_checkpoint(work, run, design), with_train_state=False)
    config = ckpt.config.replace(
        head=choice["head"],
        bg_thresh=float(choice["bg_thresh"]),
        bg_prompt=bool(choice["bg_prompt"]),
        preprocess=dataclasses.replace(ckpt.preprocess, test_short_side=choice["short_side"]),
    )
    assets.mkdir(parents=True, exist_ok=True)
    save_checkpoint(assets / CHECKPOINT_NAME, config=config, student=ckpt.student, text=ckpt.text,
                    inference_only=True, dtype=torch.float16)  # fmt: skip
    with atomic_path(assets / TEACHER_NAME) as tmp:
        shutil.copyfile(work / "teacher.pt", tmp)
    name = run_name(work, run)
    atomic_write_json(assets / PROOF_NAME, {
        "source": "frontier.json", "recipe": result["recipe"], "choice": {**choice, "run": name},
        "targets": result["targets"], "rows": bundle_rows(result, choice, name),
    })  # fmt: skip
    return choice
