"""The frontier's arithmetic: best mIoU within a latency budget, the budget table and the targets.

A frontier result (`frontier.json`, written by `zeroseg.shapeworld.frontier`) holds, per method,
its latency per setting (`ms`: short side -> milliseconds at batch 1) and its scores per seed
(`seeds`: seed -> short side -> the row `tuning.tune_and_score` returns, whose `val` holds each val
split's mIoU). The students are one method per head ("student-paper", "student-dense"), a seed
per trained run; a training-free baseline is deterministic and has the one seed "all".

Everything here is plain arithmetic on that dict (no torch), so the tests can check it on made-up
numbers. The targets are issue 24's, each on every val split:

1. at every latency budget, from the cheapest setting to the slowest, the student's best setting
   within the budget beats the best training-free setting within it by `MARGIN`, on every seed;
2. the student's best mIoU (any setting) beats the best baseline's best mIoU by `MARGIN` as a seed
   mean, and no seed is below the baseline's best;
3. the student reaches the best baseline's best mIoU (seed mean of one setting) within `SPEEDUP`
   of that baseline setting's latency;
4. the seed sd of the student's best mIoU is at most `MAX_SD`.
"""

from __future__ import annotations

import statistics
from typing import Any

#: margin of the student over the best training-free setting (mIoU, 3 points)
MARGIN = 0.03
#: the student's latency at the baseline's best mIoU, as a fraction of the baseline's latency
SPEEDUP = 0.5
#: the largest seed standard deviation of the student's best mIoU
MAX_SD = 0.02


def is_student(method: dict) -> bool:
    """True for a trained student (a seed per run), False for a training-free baseline."""
    return method["kind"] == "student"


def miou(method: dict, seed: str, side: str, split: str) -> float:
    """A method's mIoU on a val split at one short side (settings picked on tune at that side)."""
    return method["seeds"][seed][side]["val"][split]["mIoU"]


def settings(method: dict) -> list[str]:
    """The short sides (as text keys) a method was scored and timed at, cheapest first."""
    sides = set(method["ms"])
    for row in method["seeds"].values():
        sides &= set(row)
    return sorted(sides, key=lambda s: method["ms"][s])


def best_within(method: dict, seed: str, split: str, budget: float) -> tuple[float, str] | None:
    """(mIoU, short side) of the seed's best setting at most `budget` ms, None when none fits."""
    fits = [(miou(method, seed, s, split), s) for s in settings(method) if method["ms"][s] <= budget]
    return max(fits, key=lambda t: t[0]) if fits else None


def seeds_of(result: dict) -> list[str]:
    """The student seeds every student method has (as text, in numeric order)."""
    students = [m for m in result["methods"].values() if is_student(m)]
    common = set.intersection(*(set(m["seeds"]) for m in students)) if students else set()
    return sorted(common, key=int)


def student_best(result: dict, seed: str, split: str, budget: float) -> tuple[float, str, str] | None:
    """(mIoU, method, short side) of the seed's best student setting (any head) within `budget`."""
    found = []
    for name, method in result["methods"].items():
        if is_student(method) and (hit := best_within(method, seed, split, budget)):
            found.append((hit[0], name, hit[1]))
    return max(found, key=lambda t: t[0]) if found else None


def baseline_best(result: dict, split: str, budget: float) -> tuple[float, str, str] | None:
    """(mIoU, method, short side) of the best training-free setting within `budget`."""
    found = []
    for name, method in result["methods"].items():
        if not is_student(method) and (hit := best_within(method, "all", split, budget)):
            found.append((hit[0], name, hit[1]))
    return max(found, key=lambda t: t[0]) if found else None


def budgets(result: dict) -> list[float]:
    """Every setting's latency, sorted: the budgets from the cheapest setting to the slowest."""
    return sorted({ms for m in result["methods"].values() for s, ms in m["ms"].items() if s in settings(m)})


def budget_table(result: dict, split: str) -> list[dict[str, Any]]:
    """Per budget: each method's best mIoU within it (seed mean for students, None when a seed has
    no setting within it), the student's worst seed, the best baseline, and the worst seed's margin."""
    seeds = seeds_of(result)
    rows = []
    for budget in budgets(result):
        row: dict[str, Any] = {"budget_ms": budget, "methods": {}}
        for name, method in result["methods"].items():
            keys = seeds if is_student(method) else ["all"]
            hits = [best_within(method, k, split, budget) for k in keys]
            row["methods"][name] = statistics.fmean(h[0] for h in hits) if hits and all(hits) else None
        worst = [student_best(result, k, split, budget) for k in seeds]
        row["student_worst_seed"] = min(w[0] for w in worst) if worst and all(worst) else None
        base = baseline_best(result, split, budget)
        row["baseline"] = (
            None if base is None else {"mIoU": base[0], "method": base[1], "short_side": base[2]}
        )
        row["margin"] = (
            None if row["student_worst_seed"] is None or base is None else row["student_worst_seed"] - base[0]
        )
        rows.append(row)
    return rows


def _budget_target(table: list[dict]) -> dict[str, Any]:
    """Target 1 from the budget table: the smallest margin (a budget the student cannot meet at all,
    while a baseline can, counts as a miss with no margin)."""
    missing = [r["budget_ms"] for r in table if r["student_worst_seed"] is None and r["baseline"] is not None]
    margins = [(r["margin"], r["budget_ms"]) for r in table if r["margin"] is not None]
    worst = min(margins) if margins else None
    return {
        "worst_margin": None if worst is None else worst[0],
        "worst_budget_ms": None if worst is None else worst[1],
        "budgets_without_student": missing,
        "met": not missing and worst is not None and worst[0] >= MARGIN,
    }


def _best_of(result: dict, seed: str, split: str) -> float:
    return student_best(result, seed, split, float("inf"))[0]


def targets(result: dict, split: str) -> dict[str, Any]:
    """Issue 24's four targets on one val split, each with its measured amount and met / missed."""
    seeds = seeds_of(result)
    inf = float("inf")
    best_base = baseline_best(result, split, inf)
    base_miou, base_name, base_side = best_base
    base_ms = result["methods"][base_name]["ms"][base_side]
    bests = [_best_of(result, k, split) for k in seeds]
    mean = statistics.fmean(bests)
    reach = []  # (ms, method, side) of student settings whose seed mean reaches the baseline's best
    for name, method in result["methods"].items():
        if is_student(method):
            for side in settings(method):
                if statistics.fmean(miou(method, k, side, split) for k in seeds) >= base_miou:
                    reach.append((method["ms"][side], name, side))
    first = min(reach) if reach else None
    sd = statistics.stdev(bests) if len(bests) > 1 else 0.0
    return {
        "baseline_best": {"mIoU": base_miou, "method": base_name, "short_side": base_side, "ms": base_ms},
        "every_budget": _budget_target(budget_table(result, split)),
        "best": {
            "seed_mean": mean,
            "min_seed": min(bests),
            "mean_margin": mean - base_miou,
            "min_margin": min(bests) - base_miou,
            "met": mean - base_miou >= MARGIN and min(bests) >= base_miou,
        },  # fmt: skip
        "reach": {
            "ms": None if first is None else first[0],
            "method": None if first is None else first[1],
            "short_side": None if first is None else first[2],
            "ratio": None if first is None else first[0] / base_ms,
            "met": first is not None and first[0] <= SPEEDUP * base_ms,
        },
        "seed_sd": {"sd": sd, "seeds": len(bests), "met": len(bests) >= 5 and sd <= MAX_SD},
    }


def bundle_choice(result: dict, split: str = "val") -> dict[str, Any]:
    """What the bundled model becomes (issue 24): a student setting (method = design x head, short
    side) and the median seed at it, on `split`.

    The setting is the cheapest whose seed mean reaches the best baseline's best mIoU (rule "reach",
    target 3's setting); when none does, the one with the largest margin of its seed mean over the
    best baseline setting within its own latency (rule "margin"). The seed is the median of the
    seeds' mIoU at that setting (the lower of the two middle ones for an even count).
    """
    seeds = seeds_of(result)
    reach = targets(result, split)["reach"]
    if reach["method"] is not None:
        rule, name, side = "reach", reach["method"], reach["short_side"]
    else:
        options = []
        for key, method in result["methods"].items():
            for s in settings(method) if is_student(method) else ():
                base = baseline_best(result, split, method["ms"][s])
                mean = statistics.fmean(miou(method, k, s, split) for k in seeds)
                options.append((mean - (base[0] if base else 0.0), -method["ms"][s], key, s))
        _, _, name, side = max(options)
        rule = "margin"
    method = result["methods"][name]
    ranked = sorted(seeds, key=lambda k: (miou(method, k, side, split), int(k)))
    seed = ranked[(len(ranked) - 1) // 2]
    row = method["seeds"][seed][side]
    return {
        "rule": rule, "split": split, "method": name, "head": method["head"], "design": method["design"],
        "short_side": int(side), "seed": seed, "ms": method["ms"][side],
        "bg_thresh": row["bg_thresh"], "bg_prompt": row["bg_prompt"],
        "mIoU": {k: v["mIoU"] for k, v in row["val"].items()},
    }  # fmt: skip
