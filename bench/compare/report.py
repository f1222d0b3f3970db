"""The side-by-side bench's outputs for people: the terminal table and the PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zeroseg.bench.common import table
from zeroseg.utils.atomic import atomic_write_bytes


def _pct(x: float | None, digits: int = 2) -> str | None:
    return None if x is None else f"{100 * x:.{digits}f}%"


def _ms(st: dict | None) -> float | None:
    return None if st is None else st["p50_ms"]


def table_lines(result: dict[str, Any]) -> list[str]:
    """The human-readable report: environment, one line per row, the skipped backends, the headline."""
    env, cpu = result["env"], result["env"]["cpu"]
    threads = result["settings"]["threads"] or cpu["torch_threads"]
    lines = [
        f"{cpu['model']} ({cpu['usable_cpus']} CPUs; flags {' '.join(cpu['flags']) or 'none'}; without "
        f"{' '.join(cpu['flags_absent']) or '-'}); {threads} threads; OMP_WAIT_POLICY="
        f"{env['env_vars'].get('OMP_WAIT_POLICY', 'unset')}; load {cpu['load_average_1_5_15']} at start, "
        f"{cpu.get('load_average_end')} at end",
    ]
    headers = ["backend", "prec", "bs", "p50 ms", "p90", "p99", "mean", "sd", "img/s", "vs torch",
               "pre", "enc", "head", "agree", "mIoU", "mem MB"]  # fmt: skip
    rows = []
    for r in result["rows"]:
        st = r["stages"]
        lat = r["latency_ms"]
        speed = None if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}x"
        if speed and r["speedup_flips"]:
            speed += " (flips)"
        agree = _pct(r["pixel_agreement"])
        if agree and r["below_gate"]:
            agree += " LOW"
        enc = _ms(st["encoder"]) if not r["fused"] else "fused"
        head = _ms(st["head"]) if not r["fused"] else _ms(st["encoder_head"])
        rows.append([r["backend"], r["precision"], r["batch_size"], lat["p50"], lat["p90"], lat["p99"],
                     lat["mean"], lat["sd"], r["images_per_s"], speed, _ms(st["preprocess"]), enc, head,
                     agree, None if r["miou"] is None else f"{r['miou']:.4f}", r["peak_mem_mb"]])  # fmt: skip
    lines.append(table(headers, rows))
    lines.append(
        "stages are p50 ms; 'fused': encoder and head run as one engine call (its time is under head); "
        "agree: pixels equal to torch fp32; mem: load + peak of the timed series"
    )
    for s in result["skipped"]:
        lines.append(f"not run: {s['backend']}: {s['reason']}")
    for key, best in result["summary"].items():
        ratio = "" if best["speedup_vs_torch"] is None else f", {best['speedup_vs_torch']:.2f}x torch eager"
        lines.append(
            f"{key.replace('_', ' ')}: fastest within its gate is {best['fastest']} "
            f"({best['latency_ms_mean']:.1f} ms, {best['images_per_s']:.1f} images/s{ratio})"
        )
    return lines


def plot(result: dict[str, Any], path: Path) -> Path:
    """Latency and throughput against batch size, one line per backend, mIoU in the legend (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_backend: dict[str, list[dict]] = {}
    for r in result["rows"]:
        by_backend.setdefault(r["backend"], []).append(r)
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in by_backend.items():
        rows = sorted(rows, key=lambda r: r["batch_size"])
        xs = [r["batch_size"] for r in rows]
        miou = rows[0]["miou"]
        label = f"{name} ({rows[0]['precision']}" + (f", mIoU {miou:.3f})" if miou is not None else ")")
        lat = [r["latency_ms"]["p50"] for r in rows]
        err = [[r["latency_ms"]["p50"] - r["stages"]["full"]["min_ms"] for r in rows],
               [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]]  # fmt: skip
        ax_lat.errorbar(xs, lat, yerr=err, marker="o", capsize=3, label=label)
        ax_tp.errorbar(xs, [r["images_per_s"] for r in rows], yerr=[r["images_per_s_sd"] for r in rows],
                       marker="o", capsize=3, label=label)  # fmt: skip
    cpu = result["env"]["cpu"]
    where = result["env"].get("device_name") or cpu["model"]
    for ax, title, ylabel in ((ax_lat, "latency per batch (p50, min..p90)", "ms"),
                              (ax_tp, "throughput (mean ± sd over repeats)", "images / s")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["batch_size"] for r in result["rows"]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax_tp.legend(fontsize=8, loc="best")
    fig.suptitle(f"zeroseg-bench on {where}, {cpu['usable_cpus']} CPUs, "
                 f"{result['settings']['image_size_hw'][1]}x{result['settings']['image_size_hw'][0]} "
                 "images", fontsize=11)  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
