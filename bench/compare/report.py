"""The side-by-side bench's outputs for people: the terminal table and two PNG figures (latency and
throughput against batch size; accuracy against latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zeroseg.bench.common import table
from zeroseg.utils.atomic import atomic_write_bytes


def _pct(x: float | None, digits: int = 2) -> str | None:
    return None if x is None else f"{100 * x:.{digits}f}%"


def _ms(st: dict | None) -> float | None:
    return None if st is None else st["p50_ms"]


def _peak_cell(r: dict) -> str | None:
    frac = _pct(r.get("peak_fraction"), 1)
    return None if frac is None else frac + ("*" if r.get("peak_used") not in (None, "fp32") else "")


def table_lines(result: dict[str, Any]) -> list[str]:
    """The human-readable report: environment, FLOPs and peaks, one line per row (❌ rows for the backends
    that could not run), the status of each backend, ONNX Runtime's profile, the headline."""
    env, cpu = result["env"], result["env"]["cpu"]
    threads = result["settings"]["threads"] or cpu["torch_threads"]
    lines = [
        f"{cpu['model']} ({cpu['usable_cpus']} CPUs; flags {' '.join(cpu['flags']) or 'none'}; without "
        f"{' '.join(cpu['flags_absent']) or '-'}); {threads} threads; OMP_WAIT_POLICY="
        f"{env['env_vars'].get('OMP_WAIT_POLICY', 'unset')}; load {cpu['load_average_1_5_15']} at start, "
        f"{cpu.get('load_average_end')} at end",
        *_flops_lines(result),
    ]
    headers = ["", "backend", "prec", "bs", "p50 ms", "p90", "p99", "mean", "sd", "img/s", "vs torch",
               "pre", "enc", "head", "agree", "mIoU", "%peak", "mem MB"]  # fmt: skip
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
        rows.append([r.get("status_symbol", ""), r["backend"], r["precision"], r["batch_size"], lat["p50"],
                     lat["p90"], lat["p99"], lat["mean"], lat["sd"], r["images_per_s"], speed,
                     _ms(st["preprocess"]), enc, head, agree,
                     None if r["miou"] is None else f"{r['miou']:.4f}", _peak_cell(r),
                     r["peak_mem_mb"]])  # fmt: skip
    ran = {r["backend"] for r in result["rows"]}
    for s in result.get("status", []):
        if s["backend"] not in ran:  # could not run, or its export missed the gate: a row with no numbers
            rows.append([s["symbol"], s["backend"], s["precision"], *([None] * (len(headers) - 3))])
    lines.append(table(headers, rows))
    lines.append(
        "stages are p50 ms; 'fused': encoder and head run as one engine call (its time is under head); "
        "agree: pixels equal to torch fp32; %peak: achieved FLOP/s of the count above over the CPU's fp32 "
        "peak (* int8 rows: over the peak of their int8/fp32 mix); mem: load + peak of the timed series"
    )
    for s in result.get("status", []):
        prefix = "not run: " if s["backend"] not in ran else ""
        lines.append(f"{s['symbol']} {prefix}{s['backend']} ({s['precision']}): {s['reason']}")
    lines.extend(_profile_lines(result.get("ort_profile")))
    for name, facts in result["backends"].items():
        if "runtime_layers" in facts or "attention_subgraphs" in facts:
            lines.append(f"{name}: attention blocks run as one Snippets Subgraph: "
                         f"{facts.get('attention_subgraphs', '-')}; runtime layers: "
                         f"{_compact(facts.get('runtime_layers'))}")  # fmt: skip
    for key, best in result["summary"].items():
        ratio = "" if best["speedup_vs_torch"] is None else f", {best['speedup_vs_torch']:.2f}x torch eager"
        lines.append(
            f"{key.replace('_', ' ')}: fastest within its gate is {best['fastest']} "
            f"({best['latency_ms_mean']:.1f} ms, {best['images_per_s']:.1f} images/s{ratio})"
        )
    return lines


def _compact(value: Any, limit: int = 300) -> str:
    """A dict as "k v, k v" (largest first when the values are numbers), else its str; cut at `limit`."""
    if isinstance(value, dict):
        items = list(value.items())
        if all(isinstance(v, int | float) for _, v in items):
            items.sort(key=lambda kv: -kv[1])
        text = ", ".join(f"{k} {v}" for k, v in items)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flops_lines(result: dict[str, Any]) -> list[str]:
    """The FLOP count and its split, and the CPU's peaks with their rules."""
    flops, peak = result.get("flops"), result.get("cpu_peak")
    lines = []
    if flops:
        h, w = flops["network_input_hw"]
        lines.append(
            f"student forward at {w}x{h}: {flops['gflop_per_image']:.2f} GFLOP per image = "
            f"{flops['weights_gflop']:.2f} weight matmuls/convs + {flops['attention_gflop']:.2f} attention "
            f"({flops['attention_share']:.0%}, {len(flops['attention_calls'])} calls) + "
            f"{flops['other_gflop']:.2f} other"
        )
    else:
        lines.append("FLOPs: not counted (no torch row and no checkpoint, or the counter failed)")
    if peak:
        lines.append(f"peak fp32 {peak['gflops']:.1f} GFLOP/s = {peak['rule']}")
        lines.append(f"peak int8 {peak['int8_gops']:.1f} Gop/s = {peak['int8_rule']}")
        lines.append(f"clock: {peak['clock_source']}")
    return lines


def _profile_lines(profile: dict | None, ops: int = 6) -> list[str]:
    """ONNX Runtime's profile: the share of kernel time of the top op types and nodes."""
    if not profile:
        return []
    if "error" in profile:
        return [f"ONNX Runtime profile of {profile['backend']}: failed ({profile['error']})"]
    top = ", ".join(f"{o['op']} {o['share']:.1%}" for o in profile["by_op"][:ops])
    nodes = ", ".join(f"{n['node']} ({n['op']}) {n['share']:.1%}" for n in profile["top_nodes"][:3])
    return [
        f"ONNX Runtime profile of {profile['backend']} ({profile['graph']}, batch {profile['batch_size']}, "
        f"{profile['runs']} runs): {profile['kernel_ms_per_run']:.1f} ms/run in kernels; by op type: {top}",
        f"  top nodes: {nodes}",
    ]


def plot(result: dict[str, Any], path: Path) -> Path:
    """Latency and throughput against batch size, one line per backend, mIoU in the legend (PNG)."""
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
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def scatter_path(picture: Path) -> Path:
    """The accuracy-latency scatter's path, beside the main figure: compare.png -> compare-scatter.png."""
    picture = Path(picture)
    return picture.with_name(f"{picture.stem}-scatter{picture.suffix or '.png'}")


#: Marker per precision in the scatter.
MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}


def scatter_points(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(y metric, points) of the accuracy-latency scatter: per backend at the smallest batch size, its
    p50 latency and its mIoU, or, when no row has one (a random-weight preset), its pixel agreement."""
    batch = min((r["batch_size"] for r in result["rows"]), default=1)
    rows = [r for r in result["rows"] if r["batch_size"] == batch]
    metric = "miou" if any(r["miou"] is not None for r in rows) else "pixel_agreement"
    points = [{"backend": r["backend"], "precision": r["precision"], "batch_size": batch,
               "latency_ms": r["latency_ms"]["p50"], "y": r[metric], "status": r.get("status_symbol", "")}
              for r in rows if r[metric] is not None]  # fmt: skip
    return metric, points


def plot_scatter(result: dict[str, Any], path: Path) -> Path:
    """Accuracy (mIoU, else pixel agreement with torch) against batch-1 latency, one point per backend,
    marker by precision (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, points = scatter_points(result)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(points):
        ax.scatter(p["latency_ms"], p["y"], marker=MARKERS.get(p["precision"], "D"), s=60,
                   color=colours[i % len(colours)], label=f"{p['backend']} ({p['precision']})")  # fmt: skip
    batch = points[0]["batch_size"] if points else 1
    xs = [p["latency_ms"] for p in points]
    if xs and max(xs) > 4 * min(xs):  # an order of magnitude apart: a log axis keeps the fast ones apart
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(f"latency at batch {batch}, p50 (ms)")
    ax.set_ylabel("mIoU" if metric == "miou" else "pixel agreement with torch fp32")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="best")
    cpu = result["env"]["cpu"]
    where = result["env"].get("device_name") or cpu["model"]
    title = f"accuracy vs latency on {where}, {cpu['usable_cpus']} CPUs (marker: precision)"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
