"""The frontier's tables and figure: `frontier.md` and `frontier.png` from a frontier result.

`markdown` writes the settings table (latency and mIoU per method and short side), the "best mIoU
within budget" table per val split and the targets with their measured amounts; `plot` draws mIoU
against latency, one curve per method through its seed means, the seeds as points.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from zeroseg.shapeworld.frontier_math import MARGIN, MAX_SD, SPEEDUP, is_student, miou, seeds_of, settings
from zeroseg.utils.atomic import atomic_path

#: how the tables and the figure name each method
LABELS: dict[str, str] = {
    "student-paper": "student, paper's head",
    "student-dense": "student, dense head (ours)",
    "student-paper-win16": "student, paper's head, windowed encoder",
    "student-dense-win16": "student, dense head, windowed encoder (ours)",
    "maskclip": "MaskCLIP",
    "clearclip": "ClearCLIP",
    "sclip": "SCLIP",
    "naclip": "NACLIP",
}
COLOURS: dict[str, str] = {
    "student-paper": "tab:blue", "student-dense": "tab:green", "student-paper-win16": "tab:cyan",
    "student-dense-win16": "tab:olive", "maskclip": "tab:orange",
    "clearclip": "tab:red", "sclip": "tab:purple", "naclip": "tab:brown",
}  # fmt: skip


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _pt(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} pt"


def _scores(method: dict, side: str, split: str, seeds: list[str]) -> list[float]:
    keys = seeds if is_student(method) else ["all"]
    return [miou(method, k, side, split) for k in keys]


def _cell(scores: list[float]) -> str:
    if len(scores) == 1:
        return f"{scores[0]:.3f}"
    return f"{statistics.fmean(scores):.3f} ± {statistics.stdev(scores):.3f}"


def settings_table(result: dict) -> list[str]:
    """Every method's settings: short side, engine, ms at batch 1, mIoU per split (seed mean ± sd)."""
    splits, seeds = result["splits"], seeds_of(result)
    lines = ["| method | short side | engine | ms | " + " | ".join(f"{s} mIoU" for s in splits) + " |",
             "|---|---|---|---|" + "---|" * len(splits)]  # fmt: skip
    for name, method in result["methods"].items():
        for side in settings(method):
            cells = [_cell(_scores(method, side, split, seeds)) for split in splits]
            lines.append(f"| {_label(name)} | {side} | {method['engine'][side]} | {method['ms'][side]:.1f} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    return lines


def budget_lines(result: dict, split: str) -> list[str]:
    """The "best mIoU within budget" table of one split (students: seed mean; worst seed beside)."""
    names = list(result["methods"])
    lines = [f"| budget (ms) | {' | '.join(_label(n) for n in names)} | student, worst seed | "
             "best baseline | worst seed − best baseline |",
             "|---|" + "---|" * (len(names) + 3)]  # fmt: skip
    for row in result["budget_table"][split]:
        cells = ["-" if row["methods"][n] is None else f"{row['methods'][n]:.3f}" for n in names]
        worst = row["student_worst_seed"]
        base = row["baseline"]
        base_cell = (
            "-" if base is None else f"{base['mIoU']:.3f} ({_label(base['method'])} {base['short_side']})"
        )
        worst_cell = "-" if worst is None else f"{worst:.3f}"
        lines.append(f"| {row['budget_ms']:.1f} | " + " | ".join(cells)
                     + f" | {worst_cell} | {base_cell} | {_pt(row['margin'])} |")  # fmt: skip
    return lines


def target_lines(result: dict, split: str) -> list[str]:
    """Issue 24's targets on one split: each with its amount and MET / MISSED."""
    t = result["targets"][split]
    base = t["baseline_best"]
    every, best, reach, sd = t["every_budget"], t["best"], t["reach"], t["seed_sd"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    no_student = every["budgets_without_student"]
    reach_text = (
        "not reached by any student setting's seed mean" if reach["ms"] is None else
        f"reached by {_label(reach['method'])} at {reach['short_side']} in {reach['ms']:.1f} ms = "
        f"{reach['ratio']:.2f}× its {base['ms']:.1f} ms"
    )  # fmt: skip
    return [
        f"- best training-free setting: {_label(base['method'])} at {base['short_side']}: {base['mIoU']:.3f} "
        f"in {base['ms']:.1f} ms",
        f"- every budget, every seed ≥ best baseline within it + {MARGIN * 100:.0f} pt: "
        f"{verdict(every['met'])} (worst margin {_pt(every['worst_margin'])}"
        + (f" at {every['worst_budget_ms']:.1f} ms" if every["worst_budget_ms"] is not None else "")
        + (
            f"; no student setting within {', '.join(f'{b:.1f}' for b in no_student)} ms"
            if no_student
            else ""
        )
        + ")",
        f"- best mIoU, seed mean ≥ best baseline + {MARGIN * 100:.0f} pt and no seed below it: "
        f"{verdict(best['met'])} (mean {best['seed_mean']:.3f}, {_pt(best['mean_margin'])}; worst seed "
        f"{best['min_seed']:.3f}, {_pt(best['min_margin'])})",
        f"- the baseline's best mIoU at ≤ {SPEEDUP:g}× its latency: {verdict(reach['met'])} ({reach_text})",
        f"- seed sd of the best mIoU ≤ {MAX_SD * 100:.0f} pt over ≥ 5 seeds: {verdict(sd['met'])} "
        f"(sd {sd['sd'] * 100:.1f} pt over {sd['seeds']} seeds)",
    ]


def selection_lines(result: dict) -> list[str]:
    """How each seed's student was picked among its restarts (none without `--restarts`)."""
    selection = result.get("selection") or {}
    if not selection:
        return []
    count = max(len(rec["restarts"]) for rec in selection.values())
    head = " | ".join(f"restart {r}: held-out region loss" for r in range(count))
    lines = [f"| seed | {head} | kept |", "|---|" + "---|" * (count + 1)]
    for seed, rec in selection.items():
        cells = [f"{rec['restarts'][str(r)]['heldout_region_loss']:.4f}" for r in range(count)]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | restart {rec['chosen']} |")
    return ["", "Each seed's student: the restart with the lowest region loss on unlabeled held-out scenes.",
            "", *lines]  # fmt: skip


def markdown(result: dict) -> str:
    """frontier.md: the machine, the settings, the budget tables and the targets per split."""
    env = result["env"]
    cpu = env["cpu"]
    lines = [
        "# The speed/quality frontier (ShapeWorld)",
        "",
        f"Latency at batch 1 on {cpu['model']} ({', '.join(cpu['flags']) or 'no AVX2'}), {env['threads']} "
        f"threads, OMP_WAIT_POLICY={env['omp_wait_policy']}, load {cpu['load_average_1_5_15']} at the start "
        f"and {cpu.get('load_average_end')} at the end; students timed with seed {result['timed_seed']}'s "
        f"model; {len(seeds_of(result))} student seeds.",
        "",
        *settings_table(result),
        *selection_lines(result),
        "",
        "## At the best baseline's own latencies",
        "",
        *readme_lines(result),
    ]
    for split in result["splits"]:
        lines += ["", f"## Best mIoU within budget: {split}", "", *budget_lines(result, split), "",
                  f"Targets on {split}:", "", *target_lines(result, split)]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """mIoU against ms (log scale) per val split: a curve per method through its seed means, the
    seeds as points, each setting's short side beside it; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits, seeds = result["splits"], seeds_of(result)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.4), dpi=120, sharey=True)
    axes = [axes] if len(splits) == 1 else list(axes)
    for ax, split in zip(axes, splits, strict=True):
        for name, method in result["methods"].items():
            sides = settings(method)
            xs = [method["ms"][s] for s in sides]
            means = [statistics.fmean(_scores(method, s, split, seeds)) for s in sides]
            colour = COLOURS.get(name, "tab:gray")
            ax.plot(xs, means, "-o", color=colour, ms=4, lw=1.5, label=_label(name))
            if is_student(method):
                for x, s in zip(xs, sides, strict=True):
                    ax.scatter(
                        [x] * len(seeds), _scores(method, s, split, seeds), color=colour, s=9, alpha=0.5
                    )
            for x, y, s in zip(xs, means, sides, strict=True):
                ax.annotate(s, (x, y), textcoords="offset points", xytext=(3, -9), fontsize=6, color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("ms per image at batch 1 (log scale)")
        ax.set_title(f"{split}: mIoU vs latency", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mIoU (7 classes)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def readme_lines(result: dict) -> list[str]:
    """The README's frontier table: at the student's cheapest setting and at every setting of the best
    training-free method, the student's best within that budget (seed mean, worst seed) against the
    best training-free setting within it, per split."""
    splits = result["splits"]
    best_base = result["methods"][result["targets"][splits[0]]["baseline_best"]["method"]]
    students = [n for n, m in result["methods"].items() if is_student(m)]
    cheapest = min(result["methods"][n]["ms"][s] for n in students for s in settings(result["methods"][n]))
    marks = {cheapest, *(best_base["ms"][s] for s in settings(best_base))}
    head = f"student {splits[0]}: mean (worst seed) | best baseline {splits[0]}"
    head += "".join(f" | student {s} | baseline {s}" for s in splits[1:])
    lines = [f"| budget (ms) | {head} |", "|---|" + "---|---|" * len(splits)]
    tables = {s: {row["budget_ms"]: row for row in result["budget_table"][s]} for s in splits}
    for budget in sorted(marks):
        cells = [cell for split in splits for cell in _readme_cells(tables[split][budget], students)]
        lines.append(f"| {budget:.0f} | " + " | ".join(cells) + " |")
    return lines


def _readme_cells(row: dict, students: list[str]) -> tuple[str, str]:
    """A budget row's two README cells: the best student head's seed mean (the worst seed), and the
    best training-free setting within the budget."""
    means = [v for k, v in row["methods"].items() if k in students and v is not None]
    student = "-" if not means else f"{max(means):.3f} ({row['student_worst_seed']:.3f})"
    base = row["baseline"]
    if base is None:
        return student, "-"
    return student, f"{base['mIoU']:.3f} {_label(base['method'])} {base['short_side']}"
