"""The Markdown report of `zeroseg-bench gpu` (gpu.md): device, steps, head and engine tables."""

from __future__ import annotations

from typing import Any

from zeroseg.bench.common import fmt


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f} %"


def device_lines(result: dict[str, Any]) -> list[str]:
    """Device, its peaks and where they came from."""
    dev, peaks = result["device"], result["peaks"]
    bw, compute = peaks["bandwidth"], peaks["compute"]
    what = f"{dev['name']}" + (
        f" (sm {dev['capability']}, {dev['sms']} SMs)" if dev["type"] == "cuda" else ""
    )
    tflops = "none" if compute["tflops"] is None else f"{compute['tflops']:g} TFLOP/s"
    return [
        f"- device: {what}",
        f"- peak memory bandwidth: {bw['peak_bytes_per_s'] / 1e9:.0f} GB/s ({bw['source']})",
        f"- peak dense {compute['precision']} compute: {tflops} ({compute['source']})",
    ]


def step_rows(result: dict[str, Any]) -> list[list[Any]]:
    """One row per step: status, seconds and what it says."""
    rows = []
    for name, step in result["steps"].items():
        note = step.get("reason") or ""
        if name == "kernels" and step.get("counts"):
            c = step["counts"]
            done = (
                f"{c['collected']} collected"
                if result["dry_run"]
                else f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
            )
            note = f"{done}; {note}" if note else done
        rows.append([name, step["status"], step.get("seconds"), note.replace("|", "/")])
    return rows


def head_rows(step: dict[str, Any]) -> list[list[Any]]:
    """The head's one row (empty when the step did not run)."""
    if step.get("status") != "ok":
        return []
    s = step["size"]
    size = f"B={s['B']} C={s['C']} {s['side']}²"
    ref_ms, fused_ms = step["reference_ms"]["median_ms"], step["fused_ms"]["median_ms"]
    rate = [step["fused_GB_per_s"], _pct(step["fraction_of_peak_bandwidth"]), step["label_agreement"]]
    return [[size, step["dtype"], step["fused_backend"], ref_ms, fused_ms, step["speedup"], *rate]]


def model_rows(step: dict[str, Any]) -> list[list[Any]]:
    """One row per model x engine x batch."""
    rows = []
    for r in step.get("rows", []):
        hw = "x".join(str(v) for v in r["input_hw"])
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}".replace("|", "/")
        timing = [r.get("p50_ms"), r.get("images_per_s"), r.get("achieved_tflops"), _pct(r.get("mfu"))]
        rows.append([r["model"], r["engine"], r["batch"], hw, *timing, r.get("first_call_s"), status])
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The whole report."""
    title = "# zeroseg-bench gpu" + (
        " (dry run: CPU, tiny sizes; no number here is a GPU figure)" if result["dry_run"] else ""
    )
    lines = [title, "", *device_lines(result), "", "## Steps", ""]
    lines += _table(["step", "status", "seconds", "note"], step_rows(result))
    head = head_rows(result["steps"]["head"])
    if head:
        lines += ["", "## Fused head vs reference", ""]
        headers = ["size", "dtype", "fused", "reference ms", "fused ms", "speed-up", "fused GB/s",
                   "of peak bandwidth", "label agreement"]  # fmt: skip
        lines += _table(headers, head)
    models = result["steps"]["models"]
    if models.get("rows"):
        lines += ["", f"## Engines ({models['precision']}; p50 of synchronised calls)", ""]
        for name, m in models["models"].items():
            gflop = m["flops_per_image"] / 1e9
            lines.append(f"- {name}: {m['description']}, {gflop:.3g} GFLOP per image (attention included)")
        lines.append("")
        headers = [
            "model",
            "engine",
            "batch",
            "input",
            "p50 ms",
            "images/s",
            "TFLOP/s",
            "MFU",
            "first call s",
            "status",
        ]
        lines += _table(headers, model_rows(models))
    return "\n".join(lines) + "\n"
