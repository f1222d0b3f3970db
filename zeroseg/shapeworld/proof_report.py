"""The ShapeWorld proof's tables (Markdown) and picture (per-seed mIoU against the baseline)."""

from __future__ import annotations

from pathlib import Path

from zeroseg.utils.atomic import atomic_path


def _setting(row: dict) -> str:
    prompt = "yes" if row["bg_prompt"] else "no"
    return f"{row['short_side']} | {row['bg_thresh']:g} | {prompt}"


HEAD_NAMES = {"paper": "paper's head", "segments": "paper's head", "dense": "dense head (ours)"}


def markdown(result: dict) -> str:
    """Per-seed rows for each head, the other methods, and the summary over seeds with the targets."""
    splits = list(result["maskclip"]["val"])
    head = " | ".join(f"{s} mIoU" for s in splits)
    lines = [
        f"| method | {head} | tune mIoU | short side | bg threshold | bg prompt |",
        "|---|" + "---|" * (len(splits) + 4),
    ]

    def row(name: str, r: dict) -> str:
        scores = " | ".join(f"{r['val'][s]['mIoU']:.3f}" for s in splits)
        return f"| {name} | {scores} | {r['tune_mIoU']:.3f} | {_setting(r)} |"

    bundled = str(result["bundled_seed"])
    for head_mode, seeds in result["students"].items():
        for seed, r in seeds.items():
            median = seed == bundled and head_mode == "segments"
            mark = " (the median: what --bundle writes)" if median else ""
            lines.append(row(f"(i) trained student, seed {seed}, {HEAD_NAMES[head_mode]}{mark}", r))
    lines.append(row("(ii) same student, untrained", result["untrained"]))
    lines.append(row("(iii) MaskCLIP-style baseline, same teacher", result["maskclip"]))
    oracle = " | ".join(f"{result['oracle'][s]:.3f}" for s in splits)
    lines.append(f"| (iv) oracle: the teacher names each ground-truth crop | {oracle} | - | - | - | - |")
    floor = " | ".join(f"{result['all_background'][s]:.3f}" for s in splits)
    lines.append(f"| all background | {floor} | | | | |")
    lines += [
        "",
        "| student | split | mean ± sd | min | max | MaskCLIP | mean − MaskCLIP | min − MaskCLIP |"
        " every seed above | mean ≥ +5 pt |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for head_mode, summary in result["summary"].items():
        for split, s in summary.items():
            lines.append(
                f"| {HEAD_NAMES[head_mode]} | {split} ({s['seeds']} seeds) |"
                f" {s['mean']:.3f} ± {s['sd']:.3f} |"
                f" {s['min']:.3f} | {s['max']:.3f} | {s['maskclip']:.3f} | {100 * s['mean_margin']:+.1f} pt |"
                f" {100 * s['min_margin']:+.1f} pt | {'yes' if s['every_seed_above'] else 'no'} |"
                f" {'yes' if s['mean_target_met'] else 'no'} |"
            )
    if "threads" in result:
        lines += ["", *thread_table(result["threads"], splits)]
    return "\n".join(lines) + "\n"


def thread_table(check: dict, splits: list[str]) -> list[str]:
    """Each seed's mIoU trained at the proof's thread count and at the other one, and the changes
    beside the seed spread (`proof_score.thread_check`)."""
    a, b = check["proof_threads"], check["threads"]
    lines = [
        f"| trained at {a} → {b} threads | seed | " + " | ".join(splits) + " |",
        "|---|---|" + "---|" * len(splits),
    ]
    for head_mode, data in check["heads"].items():
        for seed, row in data["seeds"].items():
            cells = [
                f"{r['proof']:.3f} → {r['other']:.3f} ({100 * r['change']:+.1f} pt)"
                for r in map(row.get, splits)
            ]
            lines.append(f"| {HEAD_NAMES[head_mode]} | {seed} | " + " | ".join(cells) + " |")
        spread = [data["summary"][s] for s in splits]
        cells = [f"{100 * s['largest_change']:.1f} pt / {100 * s['seed_sd']:.1f} pt" for s in spread]
        lines.append(f"| {HEAD_NAMES[head_mode]} | largest change / seed sd | " + " | ".join(cells) + " |")
    return lines


def plot(result: dict, path: Path) -> None:
    """Each seed's mIoU per val split as dots, the baseline as a line per split, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(result["maskclip"]["val"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = {"paper": "tab:blue", "segments": "tab:blue", "dense": "tab:green"}
    for i, split in enumerate(splits):
        for h, (head_mode, seeds) in enumerate(result["students"].items()):
            scores = [r["val"][split]["mIoU"] for r in seeds.values()]
            centre = i + (h - 0.5) * 0.22
            xs = [centre + 0.05 * (k - (len(scores) - 1) / 2) for k in range(len(scores))]
            first = i == 0
            label = f"student, {HEAD_NAMES[head_mode]}: seeds and mean"
            ax.scatter(
                xs,
                scores,
                color=colours.get(head_mode, "tab:gray"),
                zorder=3,
                s=18,
                label=label if first else None,
            )
            mean = result["summary"][head_mode][split]["mean"]
            ax.hlines(mean, centre - 0.1, centre + 0.1, color=colours.get(head_mode, "tab:gray"), lw=2)
        base = result["maskclip"]["val"][split]["mIoU"]
        ax.hlines(
            base, i - 0.4, i + 0.4, color="tab:orange", lw=2, label="MaskCLIP-style" if i == 0 else None
        )
        ax.hlines(base + 0.05, i - 0.4, i + 0.4, color="tab:orange", lw=1, ls="--",
                  label="MaskCLIP + 5 pt (target)" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(splits)), [f"{s} ({result['val_images'][s]} scenes)" for s in splits])
    ax.set_xlim(-0.6, len(splits) - 0.4)
    ax.set_ylabel("mIoU (7 classes)")
    ax.set_title("ShapeWorld: label-free student vs training-free baseline", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
