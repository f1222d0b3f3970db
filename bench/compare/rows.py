"""The side-by-side bench's rows: per backend and batch size, the documented JSON fields.

Kept apart from the measuring so the arithmetic (percentiles, throughput, speed-ups, whether a
speed-up flips between repeats, the fraction of the CPU's peak) is unit-tested on plain numbers.

Row fields (README, "Benchmarks", documents each):
    backend, precision, batch_size, fused,
    latency_ms {p50, p90, p99, mean, sd}          the whole pipeline, pooled over repeats
    stages {preprocess, encoder, head, encoder_head, full}: `timing.describe` of each (encoder and
                                                   head are None for a fused engine)
    images_per_s, images_per_s_sd                  batch / mean full time, mean and sd over repeats
    speedup_vs_torch, speedup_per_repeat, speedup_flips
    pixel_agreement, agreement_gate, below_gate, miou, embedding_cosine
    peak_mem_mb, load_mb, run_mem_mb              load (building it) + the series' own peak
    first_call_ms, prepare_s, gflops, peak_fraction
    peak_used, peak_gflops, int8_flop_share     which peak the fraction is of (`peak.row_peak`)
    status, status_symbol                          passed (✅) or failed_gate (❎); see `status_block`
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zeroseg.bench.compare.backends import BASELINE_ROWS
from zeroseg.bench.compare.engines import GATE_FAILED
from zeroseg.bench.compare.peak import row_peak
from zeroseg.bench.timing import describe, mean, rate

#: Ultralytics-style status of a backend: ran within its gate, ran below it, could not run.
SYMBOLS = {"passed": "✅", "failed_gate": "❎", "not_run": "❌"}
#: What the exporters' refusal says when the exported graph ran on the parity images and missed its gate.
EXPORT_GATE_FAILED = GATE_FAILED


def speedups(baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]]) -> list[float]:
    """Per repeat: the baseline's mean time over the other's (> 1: the other is faster)."""
    return [mean(b) / mean(o) for b, o in zip(baseline, other, strict=True)]


def flips(ratios: Sequence[float]) -> bool:
    """True when repeats disagree on which side is faster (some ratio above 1, some below)."""
    return bool(ratios) and min(ratios) < 1.0 < max(ratios)


def _latency(st: dict[str, Any]) -> dict[str, float]:
    return {k: st[f"{k}_ms"] for k in ("p50", "p90", "p99", "mean", "sd")}


def build_row(
    name: str,
    batch: int,
    facts: dict[str, Any],
    series: dict[str, list[list[float]]],
    baseline: dict[str, list[list[float]]] | None,
    run_mem_mb: float | None,
    gflop_per_image: float | None,
    peak: dict[str, Any] | None,
) -> dict[str, Any]:
    """One row from a backend's facts and its samples (`series[stage]` = one list per repeat)."""
    fused = bool(facts["fused"])
    stages = {stage: describe(v) for stage, v in series.items()}
    if fused:
        stages["encoder"] = stages["head"] = None
    full = stages["full"]
    throughput = rate(batch, series["full"])
    ratios = speedups(baseline["full"], series["full"]) if baseline is not None else None
    speedup = pooled_mean(baseline["full"]) / full["mean_ms"] if baseline is not None else None
    load = facts.get("load_mb")
    gflops = gflop_per_image * throughput["mean"] if gflop_per_image is not None else None
    peak_gflops, peak_used = row_peak(peak, facts["precision"], facts.get("int8_share"))
    status = "failed_gate" if facts.get("below_gate") else "passed"
    return {
        "backend": name,
        "precision": facts["precision"],
        "batch_size": batch,
        "fused": fused,
        "latency_ms": _latency(full),
        "stages": stages,
        "images_per_s": throughput["mean"],
        "images_per_s_sd": throughput["sd"],
        "speedup_vs_torch": speedup,
        "speedup_per_repeat": ratios,
        "speedup_flips": flips(ratios) if ratios else False,
        "pixel_agreement": facts.get("pixel_agreement"),
        "agreement_gate": facts["gate"],
        "below_gate": bool(facts.get("below_gate")),
        "miou": facts.get("miou"),
        "embedding_cosine": facts.get("embedding_cosine"),
        "peak_mem_mb": (load or 0.0) + run_mem_mb if run_mem_mb is not None else None,
        "load_mb": load,
        "run_mem_mb": run_mem_mb,
        "first_call_ms": facts.get("first_call_ms"),
        "prepare_s": facts.get("prepare_s"),
        "gflops": gflops,
        "peak_fraction": gflops / peak_gflops if gflops is not None and peak_gflops else None,
        "peak_used": peak_used,
        "peak_gflops": peak_gflops,
        "int8_flop_share": facts.get("int8_share"),
        "status": status,
        "status_symbol": SYMBOLS[status],
    }


def pooled_mean(repeats: Sequence[Sequence[float]]) -> float:
    """Mean of samples pooled over repeats."""
    return mean([x for rep in repeats for x in rep])


def build_rows(segs, info, samples, memory, batch_sizes, peak) -> list[dict[str, Any]]:
    """Every (backend, batch size) row, torch first; ratios against torch when it ran. The GFLOP per
    image is each backend's `gflop_per_image` fact (None for a different network: maskclip)."""
    rows = []
    for name in segs:
        for b in batch_sizes:
            baseline = samples["torch"][b] if "torch" in samples else None
            rows.append(build_row(name, b, info[name], samples[name][b], baseline, memory[name][b],
                                  info[name].get("gflop_per_image"), peak))  # fmt: skip
    return rows


def status_block(names, info: dict, skipped: dict[str, str], precision_of: dict[str, str]) -> list[dict]:
    """One entry per requested backend, in order: status, its symbol and why.

    passed (✅): it ran and its pixel agreement with torch is within its gate (or it has no gate: torch
    itself, a different method, a random-weight int8 row); failed_gate (❎): it ran below its gate in
    the bench, or its export ran the graph on the parity images and refused it for missing the gate
    (so there is no bundle to time: no row); not_run (❌): it could not run here, with the reason.
    """
    out = []
    for name in names:
        if name in skipped:
            why = skipped[name]
            status = "failed_gate" if EXPORT_GATE_FAILED in why else "not_run"
        else:
            facts = info[name]
            gate, agree = facts.get("gate"), facts.get("pixel_agreement")
            status = "failed_gate" if facts.get("below_gate") else "passed"
            if gate is None or agree is None:
                why = "ran (no agreement gate)"
            else:
                sign = "<" if status == "failed_gate" else ">="
                why = f"pixel agreement {agree:.4%} {sign} gate {gate:.2%}"
        out.append({"backend": name, "precision": precision_of.get(name), "status": status,
                    "symbol": SYMBOLS[status], "reason": why})  # fmt: skip
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline: per batch size, the fastest backend within its agreement gate, and its speed-up."""
    out: dict[str, Any] = {}
    for b in sorted({r["batch_size"] for r in rows}):
        ok = [
            r
            for r in rows
            if r["batch_size"] == b and not r["below_gate"] and r["backend"] not in BASELINE_ROWS
        ]
        if not ok:
            continue
        best = min(ok, key=lambda r: r["latency_ms"]["mean"])
        out[f"batch_{b}"] = {
            "fastest": best["backend"],
            "latency_ms_mean": best["latency_ms"]["mean"],
            "images_per_s": best["images_per_s"],
            "speedup_vs_torch": best["speedup_vs_torch"],
        }
    return out
