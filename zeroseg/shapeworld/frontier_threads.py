"""The frontier's thread check: do the seeds move when the recipe trains at another thread count?

    python -m zeroseg.shapeworld.proof --work runs/shapeworld --seeds 5 --restarts 2 --frontier \
        --compare-threads 1

Each seed is trained again at `T` torch threads with the same recipe (its restarts included, the
one kept again by its held-out loss: the selection is part of the recipe), then scored as the
frontier scores its students, every head and design, at `THREAD_SIDES` (the side where every
seed's best mIoU is: the full grid would cost five times as much). Per seed and val split, the best
mIoU of the frontier's run and of the new one at those sides, and the change; the target (issue 24):
no seed moves by more than `MAX_CHANGE`. Written into frontier.json as `threads`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the short sides the thread check scores (the frontier's best side for every seed)
THREAD_SIDES: tuple[int, ...] = (512,)
#: the largest change of a seed's best mIoU the target allows (2 points)
MAX_CHANGE = 0.02


def best_at(rows: dict[str, dict], seed: str, split: str, sides: tuple[int, ...]) -> tuple[float, str]:
    """(best mIoU, method) of one seed over student methods (method -> seed -> side -> row) at `sides`."""
    return max(
        (rows[m][seed][str(s)]["val"][split]["mIoU"], m)
        for m in rows
        for s in sides
        if str(s) in rows[m][seed]
    )


def thread_check(frontier: dict, others: dict[str, dict], threads: int, splits: list[str]) -> dict[str, Any]:
    """Compare the frontier's students with the same seeds trained at `threads` threads.

    Args:
        frontier: the frontier result (`frontier.json`).
        others: method -> seed -> side -> row of the new runs (as frontier.json's `seeds`).
        threads: their torch thread count.
        splits: the val splits.

    Returns:
        {"threads", "sides", per seed and split {"frontier", "other", "change", method of each},
        per split {"largest_change", "met"}}.
    """
    ours = {m: v["seeds"] for m, v in frontier["methods"].items() if v["kind"] == "student"}
    seeds: dict[str, dict] = {}
    for seed in sorted(next(iter(others.values())), key=int):
        seeds[seed] = {}
        for split in splits:
            (was, was_by), (now, now_by) = (
                best_at(ours, seed, split, THREAD_SIDES),
                best_at(others, seed, split, THREAD_SIDES),
            )
            seeds[seed][split] = {
                "frontier": was,
                "other": now,
                "change": now - was,
                "methods": [was_by, now_by],
            }
    summary = {}
    for split in splits:
        largest = max(abs(row[split]["change"]) for row in seeds.values())
        summary[split] = {"largest_change": largest, "met": largest <= MAX_CHANGE}
    return {"threads": threads, "sides": list(THREAD_SIDES), "seeds": seeds, "summary": summary}


def score_other_runs(work: Path, runs: dict[int, Path]) -> dict[str, dict]:
    """method -> seed -> side -> row of `runs` at `THREAD_SIDES`, every head and design (kept in
    `<work>/scores/`, like the frontier's own)."""
    from zeroseg.data.voc import VOCDataset
    from zeroseg.shapeworld.frontier import score_runs
    from zeroseg.shapeworld.proof_score import VAL_SPLITS

    tune = VOCDataset(work / "tune", "val")
    vals = {name: VOCDataset(work / name, "val") for name in VAL_SPLITS}
    return score_runs(work, runs, tune, vals, THREAD_SIDES)
