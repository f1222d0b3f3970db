"""The ShapeWorld proof over seeds: does label-free distillation beat a training-free baseline?

    python -m zeroseg.shapeworld.proof --work runs/shapeworld              # 3 seeds + the table
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5    # 5 seeds
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --compare-threads 1  # + the seeds at 1 thread
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --frontier  # speed/quality frontier
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --restarts 2 --frontier  # + selection
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --restarts 2 --bundle  # its choice
    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --restarts 2 --frontier \
        --compare-threads 1  # + the frontier's seeds trained at 1 thread

Every step runs the public `zeroseg` commands and is skipped when its output already exists, so an
interrupted run resumes. Scenes: train (seed 1, 1,000, unlabeled), tune (seed 777, 50), val
(seed 999, 200) and val2 (seed 4242, 200: a second held-out split from a seed no setting was ever
looked at on); a tiny open_clip CLIP pretrained on captioned single shapes; its 30 grid views
cached once; then per seed a `shapeworld` student (tiny, one grouping stage, no masking) distilled
with the region loss in place of the segment matching (README, ShapeWorld findings). With
`--restarts K` each seed trains K runs and keeps the one with the lowest region loss on `heldout`
(seed 2718, 200 unlabeled scenes: their teacher features, never their labels).

Every method gets the same grid of inference settings (`zeroseg.shapeworld.tuning`), picked on
tune and scored once on each val split: (i) the trained student, per seed; (ii) the same student
untrained; (iii) the MaskCLIP-style baseline on the same teacher and templates; (iv) an oracle: the
teacher naming each ground-truth object's crop. Results: `<work>/proof.json`, `<work>/proof.md`,
`<work>/proof.png`.

`--frontier` instead scores every method per short side, with the training-free baselines MaskCLIP,
ClearCLIP, SCLIP and NACLIP up to 768 px, times every setting at batch 1 on its fastest gated engine
(`zeroseg.shapeworld.frontier`, `zeroseg-bench frontier`) and writes `<work>/frontier.json`,
`frontier.md` (settings, best mIoU within each latency budget, the targets) and `frontier.png`.
With `--compare-threads T` the seeds are trained again at T threads and scored at the frontier's
best side (`zeroseg.shapeworld.frontier_threads`). `--bundle` writes the frontier's choice into
`zeroseg/assets` (`zeroseg.shapeworld.bundle`: the median seed at the cheapest setting that reaches
the best baseline's best mIoU, with its head, short side and background settings recorded; the
model the bench, the demo and `bundled` use).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from zeroseg.shapeworld.proof_report import markdown, plot
from zeroseg.shapeworld.proof_score import prove, relative_runs, run_name, score_students, thread_check
from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json

#: split name -> (generator seed, scenes, val fraction); "heldout": unlabeled images no run trains
#: on, for picking among restarts by their region loss (`zeroseg.train.selection`; never its labels)
SPLITS = {"train": (1, 1000, 0.0), "tune": (777, 50, 1.0), "val": (999, 200, 1.0), "val2": (4242, 200, 1.0),
          "heldout": (2718, 200, 0.0)}  # fmt: skip
#: restart r of seed s trains with seed s + RESTART_SEED_STEP * r (restart 0 is the seed itself)
RESTART_SEED_STEP = 1000
TEACHER_STEPS = 176  # the bundled teacher: 176 steps (a 120 s budget on a loaded 2-core CPU)
TRAIN_ARGS = (
    "--preset shapeworld --steps {steps} --batch-size 32 --lr 1e-3 --loss-weights 1,0,1"
    " --region-weight {region} --templates shapeworld --test-short-side 128 --bg-prompt"
    " --log-every 50 --seed {seed}"
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The student recipe the proof trains for every seed (the flags of `zeroseg train`)."""

    steps: int = 400
    region_weight: float = 1.0
    ema: float | None = 0.99  # the documented proof run; made no measurable difference on tune (README)
    threads: int | None = None  # torch threads of the training runs (None: the machine's default)
    soft_assign: float = 0.0  # share of the steps with soft group assignments (`zeroseg train --soft-assign`)
    restarts: int = 1  # runs per seed; the one with the lowest held-out region loss is the seed's student

    def tag(self) -> str:
        """The run folder of this recipe: a changed recipe never reuses another recipe's runs."""
        tag = f"steps{self.steps}-region{self.region_weight:g}"
        tag += f"-ema{self.ema:g}" if self.ema else ""
        tag += f"-soft{self.soft_assign:g}" if self.soft_assign else ""
        return tag + (f"-threads{self.threads}" if self.threads else "")

    def train_args(self, seed: int) -> list[str]:
        """`zeroseg train` flags for one seed."""
        args = TRAIN_ARGS.format(steps=self.steps, region=self.region_weight, seed=seed).split()
        args += ["--ema", str(self.ema)] if self.ema else []
        return args + (["--soft-assign", str(self.soft_assign)] if self.soft_assign else [])


def _zeroseg(*args: str, threads: int | None = None) -> None:
    cmd = [sys.executable, "-m", "zeroseg", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if subprocess.run(cmd, env=env).returncode != 0:
        raise SystemExit(
            f"zeroseg.shapeworld.proof: `zeroseg {args[0]}` failed (see above); fix it and rerun to resume"
        )


def shared_inputs(work: Path) -> None:
    """Scenes, teacher and the teacher cache: the same for every seed; each skipped when it exists."""
    for name, (seed, n, val) in SPLITS.items():
        if not (work / name / "dataset.json").is_file():
            _zeroseg("synth", "--out", str(work / name), "--kind", "scenes", "--n", str(n),
                     "--seed", str(seed), "--val-fraction", str(val), "-q", "--overwrite")  # fmt: skip
    if not (work / "teacher.pt").is_file():
        _zeroseg("pretrain-teacher", "--out", str(work / "teacher.pt"), "--steps", str(TEACHER_STEPS), "-q")
    for split, cache in (("train", "cache"), ("heldout", "heldout-cache")):
        if not (work / cache / "manifest.json").is_file():
            _zeroseg("cache-teacher", "--data", str(work / split / "JPEGImages"), "--teacher",
                     str(work / "teacher.pt"), "--out", str(work / cache), "--image-size", "128",
                     "--workers", "1", "--no-progress")  # fmt: skip


def student_run(work: Path, recipe: Recipe, seed: int, restart: int = 0) -> Path:
    """Train one restart of one seed of the recipe (skipped when its model.pt exists); returns the
    run folder (`seed<s>`, or `seed<s>-restart<r>` trained with seed s + RESTART_SEED_STEP * r)."""
    run = work / "students" / recipe.tag() / (f"seed{seed}" + (f"-restart{restart}" if restart else ""))
    if not (run / "model.pt").is_file():
        resume = ["--resume"] if (run / "last.pt").is_file() else []
        args = recipe.train_args(seed + RESTART_SEED_STEP * restart)
        _zeroseg("train", "--data", str(work / "train" / "JPEGImages"), "--teacher-cache",
                 str(work / "cache"), "--out", str(run), "-q", *args, *resume,
                 threads=recipe.threads)  # fmt: skip
    return run


def heldout(work: Path, run: Path) -> float:
    """The run's region loss on the unlabeled held-out split (kept in the run folder)."""
    from zeroseg.train.selection import heldout_loss

    path = run / "heldout.json"
    if path.is_file():
        return float(json.loads(path.read_text())["region_loss"])
    loss = heldout_loss(run / "model.pt", work / "heldout" / "JPEGImages", work / "heldout-cache")
    atomic_write_json(path, {"split": "heldout", "seed": SPLITS["heldout"][0], "region_loss": loss})
    return loss


def selected_run(work: Path, recipe: Recipe, seed: int) -> tuple[Path, dict]:
    """The seed's student: its restarts trained, the lowest held-out region loss kept (no label is
    read); returns the run and the record of the choice."""
    runs = [student_run(work, recipe, seed, r) for r in range(recipe.restarts)]
    if len(runs) == 1:
        return runs[0], {"chosen": 0, "restarts": {}}
    losses = [heldout(work, run) for run in runs]
    chosen = min(range(len(runs)), key=lambda r: (losses[r], r))
    record = {str(r): {"run": run_name(work, run), "heldout_region_loss": loss}
              for r, (run, loss) in enumerate(zip(runs, losses, strict=True))}  # fmt: skip
    return runs[chosen], {"chosen": chosen, "restarts": record}


def selected_runs(work: Path, recipe: Recipe, seeds: int) -> tuple[dict[int, Path], dict[str, dict]]:
    """`selected_run` for seeds 0..seeds-1: the runs and, per seed (as text), the choice."""
    picked = {seed: selected_run(work, recipe, seed) for seed in range(seeds)}
    return {s: run for s, (run, _) in picked.items()}, {str(s): rec for s, (_, rec) in picked.items()}


def untrained_run(work: Path, recipe: Recipe) -> Path:
    """The untrained student: the recipe's seed 0 after one step at learning rate 1e-12 (training
    refuses a zero rate; the weights move by about 1e-12: the initial weights)."""
    run = work / "students" / "untrained"
    if not (run / "model.pt").is_file():
        args = dataclasses.replace(recipe, steps=1, ema=None).train_args(0)
        _zeroseg("train", "--data", str(work / "train" / "JPEGImages"), "--teacher-cache",
                 str(work / "cache"), "--out", str(run), "-q", *args, "--lr", "1e-12")  # fmt: skip
    return run


def frontier_of(work: Path, recipe: Recipe) -> dict:
    """`<work>/frontier.json`, refused in one line unless it is of `recipe` (what --bundle reads)."""
    path = work / "frontier.json"
    result = json.loads(path.read_text()) if path.is_file() else None
    if result is None or result.get("recipe") != dataclasses.asdict(recipe):
        raise SystemExit(
            f"zeroseg.shapeworld.proof: --bundle needs {path} of this recipe: run with --frontier "
            "(and the same --restarts and recipe flags)"
        )
    return result


def bundle(work: Path, recipe: Recipe, runs: dict[int, Path]) -> None:
    """The frontier's choice into zeroseg/assets (`zeroseg.shapeworld.bundle`); `frontier.json` must
    be of this recipe (run --frontier first, or with --bundle)."""
    from zeroseg.shapeworld.bundle import write_bundle

    choice = write_bundle(work, frontier_of(work, recipe), runs)
    scores = ", ".join(f"{k} {v:.3f}" for k, v in choice["mIoU"].items())
    print(f"bundled seed {choice['seed']} ({choice['method']}, short side {choice['short_side']}, rule "
          f"{choice['rule']}): val mIoU {scores}")  # fmt: skip


def compare_threads(work: Path, recipe: Recipe, result: dict, threads: int) -> dict:
    """Train the proof's seeds again at `threads` torch threads, score them on the same grid and
    return how far each moved (`proof_score.thread_check`), with the proof's own thread count."""
    other = dataclasses.replace(recipe, threads=threads)
    runs = {int(seed): selected_run(work, other, int(seed))[0] for seed in result["students"]["segments"]}
    check = thread_check(result["students"], score_students(work, runs), threads)
    recorded = {_run_threads(work / row["run"]) for row in result["students"]["segments"].values()}
    # runs from before metrics.jsonl recorded torch_threads: the recipe's count, else this process's
    # default, which the training processes inherit
    check["proof_threads"] = recorded.pop() if len(recorded) == 1 and None not in recorded else (
        recipe.threads or torch.get_num_threads()
    )  # fmt: skip
    return check


def write_frontier(
    work: Path, runs: dict[int, Path], recipe: Recipe, rescore: bool, selection: dict | None = None
) -> None:
    """The frontier of `runs` and the baselines: `<work>/frontier.json`, `.md` and `.png`; with
    `selection`, how each seed's run was picked among its restarts."""
    from zeroseg.shapeworld.frontier import frontier
    from zeroseg.shapeworld.frontier_report import markdown as frontier_markdown
    from zeroseg.shapeworld.frontier_report import plot as frontier_plot

    if rescore:
        for old in (work / "scores").glob("frontier-*.json"):
            old.unlink()
        (work / "frontier" / "times.json").unlink(missing_ok=True)
    result = frontier(work, runs, threads=torch.get_num_threads(), recipe=dataclasses.asdict(recipe))
    if selection and recipe.restarts > 1:
        result["selection"] = selection
    atomic_write_json(work / "frontier.json", result)
    text = frontier_markdown(result)
    atomic_write_bytes(work / "frontier.md", text.encode())
    frontier_plot(result, work / "frontier.png")
    print(text)


def frontier_compare_threads(work: Path, recipe: Recipe, runs: dict[int, Path], threads: int) -> None:
    """The frontier's thread check (`zeroseg.shapeworld.frontier_threads`): the seeds of `runs`
    trained again at `threads` threads (restarts and selection included), scored, and the changes
    written into frontier.json as `threads`."""
    from zeroseg.shapeworld.frontier_threads import score_other_runs, thread_check

    others, selection = selected_runs(work, dataclasses.replace(recipe, threads=threads), len(runs))
    result = json.loads((work / "frontier.json").read_text())
    check = thread_check(result, score_other_runs(work, others), threads, result["splits"])
    check["frontier_threads"] = sorted({t for t in (_run_threads(r) for r in runs.values()) if t})
    check["selection"] = selection
    result["threads"] = check
    atomic_write_json(work / "frontier.json", result)
    moved = ", ".join(f"{k} {v['largest_change']:+.3f}" for k, v in check["summary"].items())
    print(f"thread check ({threads} thread(s) against {check['frontier_threads']}): largest change {moved}")


def _run_threads(run: Path) -> int | None:
    """The torch thread count a training run logged in its metrics (None when it did not)."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return json.loads(lines[0]).get("torch_threads") if lines else None


def _names(work: Path, runs: dict[int, Path]) -> dict[str, str]:
    """seed (as text) -> its run folder as proof.json records it (`run_name`)."""
    return {str(seed): run_name(work, run) for seed, run in runs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/shapeworld"), help="working folder")
    parser.add_argument("--seeds", type=int, default=3, help="student seeds 0..N-1 (default 3)")
    parser.add_argument("--steps", type=int, default=Recipe.steps, help="student training steps")
    parser.add_argument(
        "--region-weight", type=float, default=Recipe.region_weight, help="region loss weight"
    )
    parser.add_argument("--ema", type=float, default=Recipe.ema, help="EMA decay of the weights (0: off)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the training runs")
    parser.add_argument(
        "--soft-assign", type=float, default=Recipe.soft_assign,
        help="share of the steps with soft group assignments (zeroseg train --soft-assign; 0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--restarts", type=int, default=Recipe.restarts,
        help="runs per seed; the lowest region loss on unlabeled held-out scenes is kept (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-threads", type=int, default=None, metavar="T",
        help="also train the same seeds at T torch threads and report how far they move",
    )  # fmt: skip
    parser.add_argument(
        "--bundle", action="store_true",
        help="write the frontier's choice (frontier.json of this recipe) into zeroseg/assets",
    )  # fmt: skip
    parser.add_argument(
        "--frontier", action="store_true",
        help="score every method per short side, time every setting, write frontier.json/.md/.png",
    )  # fmt: skip
    parser.add_argument("--rescore", action="store_true", help="score again (drops proof.json's scores)")
    args = parser.parse_args(argv)
    if (
        args.seeds < 1
        or args.steps < 1
        or args.restarts < 1
        or args.region_weight < 0
        or (args.threads is not None and args.threads < 1)
        or (args.compare_threads is not None and args.compare_threads < 1)
    ):
        raise SystemExit(
            "zeroseg.shapeworld.proof: --seeds, --steps, --restarts, --threads and --compare-threads "
            "must be positive and --region-weight non-negative"
        )
    if args.ema is not None and not 0.0 <= args.ema < 1.0:
        raise SystemExit(f"zeroseg.shapeworld.proof: --ema must be in [0, 1) (0: off), got {args.ema}")
    if args.bundle and args.compare_threads and not args.frontier:
        raise SystemExit(
            "zeroseg.shapeworld.proof: --compare-threads goes with --frontier (the frontier's thread "
            "check) or alone (the proof's); run --bundle separately"
        )
    if not 0.0 <= args.soft_assign < 1.0:
        raise SystemExit(f"zeroseg.shapeworld.proof: --soft-assign must be in [0, 1), got {args.soft_assign}")
    recipe = Recipe(
        args.steps, args.region_weight, args.ema or None, args.threads, args.soft_assign, args.restarts
    )
    work = args.work
    if args.bundle and not args.frontier:
        frontier_of(work, recipe)  # before anything is trained or written
    work.mkdir(parents=True, exist_ok=True)
    shared_inputs(work)
    runs, selection = selected_runs(work, recipe, args.seeds)
    if args.frontier or args.bundle:
        if args.frontier:
            write_frontier(work, runs, recipe, args.rescore, selection)
            if args.compare_threads:
                frontier_compare_threads(work, recipe, runs, args.compare_threads)
        if args.bundle:
            bundle(work, recipe, runs)
        return
    scored = work / "proof.json"
    if args.rescore:
        shutil.rmtree(work / "scores", ignore_errors=True)
    previous = json.loads(scored.read_text()) if scored.is_file() and not args.rescore else {}
    scored_runs = {  # an older proof.json names its runs absolutely: compare them relative to work
        seed: run_name(work, work / row["run"])
        for seed, row in previous.get("students", {}).get("segments", {}).items()
    }
    same = previous.get("recipe") == dataclasses.asdict(recipe) and scored_runs == _names(work, runs)
    if same:  # scored already: the scores are a step too (--rescore to redo them)
        result = relative_runs(work, previous)
    else:
        result = prove(work, runs, untrained_run(work, recipe), recipe=dataclasses.asdict(recipe))
        if recipe.restarts > 1:
            result["selection"] = selection
        atomic_write_json(scored, result)
    if args.compare_threads and result.get("threads", {}).get("threads") != args.compare_threads:
        result["threads"] = compare_threads(work, recipe, result, args.compare_threads)
        atomic_write_json(scored, result)
    atomic_write_bytes(work / "proof.md", markdown(result).encode())
    plot(result, work / "proof.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
