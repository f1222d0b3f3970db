"""Benchmark of the inference head: PyTorch reference vs fused Triton kernels.

    python -m zeroseg.bench.head_bench --out results.json              # CUDA machine
    python -m zeroseg.bench.head_bench --device cpu --quick --out r.json   # smoke check, reference only

Sections (GPU defaults):
* segment_head — the whole ZeroSeg head, B in {1, 16}, K=8 segment tokens with 28x28 maps to 448x448,
  C in {21, 150, 1000, 21843}, D=512;
* upsample — the label upsampling alone (kernel level, no label-range check), B in {1, 16};
* similarity — dense patch tokens (16 x 784) against C classes: the fused softmax/argmax kernel vs
  cuBLAS `tokens @ text.T` + softmax + max on pre-normalised inputs, in TFLOP/s.

Timing: CUDA events around each call after warm-up, median of --iters (CPU: perf_counter). Each
row reports the minimum bytes the op must move (its inputs and outputs: tokens, text, maps, label
map), the achieved GB/s and its fraction of the device's peak memory bandwidth. The peak comes from
a table of datasheet values keyed by device name, else from a measured device-to-device copy; the
JSON says which. The targets below are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import typing
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from zeroseg.bench.timing import sample_times
from zeroseg.kernels import reference, segment_head, token_text_similarity

# Datasheet peak memory bandwidth, bytes/s; first matching rule wins (all words in the name).
PEAK_BANDWIDTH = [
    (("H200",), 4.8e12),
    (("H100", "PCIE"), 2.0e12),
    (("H100", "NVL"), 3.9e12),
    (("H100",), 3.35e12),  # SXM5 HBM3
    (("A100", "PCIE", "80GB"), 1.935e12),
    (("A100", "80GB"), 2.039e12),
    (("A100",), 1.555e12),  # 40 GB
    (("L40S",), 0.864e12),
    (("L4",), 0.300e12),
    (("A10",), 0.600e12),
    (("T4",), 0.320e12),
    (("RTX 4090",), 1.008e12),
]
TARGETS = {
    "fused_segment_head_speedup_B16_C150": 10.0,
    "fused_fraction_of_peak_bandwidth": 0.5,
    "similarity_C21843_vs_cublas_speedup": 1.0,
}
LABEL_DTYPE = torch.int32


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> dict[str, float]:
    """Median / p10 / p90 / min of `iters` timed calls after `warmup` untimed ones, in ms."""
    times = sorted(sample_times(fn, device, warmup=warmup, iters=iters, cuda_events=True))
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"median_ms": statistics.median(times), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": times[0]}


def measured_copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted), median of 10."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), device, warmup=3, iters=10)["median_ms"]
    return 2 * src.numel() * 4 / (t / 1e3)


def peak_bandwidth(device: torch.device, copy_bytes: int) -> dict[str, object]:
    """Peak memory bandwidth and where it came from (datasheet table or measured copy)."""
    copy_bw = measured_copy_bandwidth(device, copy_bytes)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    upper = name.upper()
    for words, bw in PEAK_BANDWIDTH:
        if device.type == "cuda" and all(w in upper for w in words):
            source = f"datasheet table entry {' '.join(words)}"
            return {
                "device": name,
                "peak_bytes_per_s": bw,
                "source": source,
                "measured_copy_bytes_per_s": copy_bw,
            }
    source = "measured device-to-device copy (device not in the datasheet table)"
    return {
        "device": name,
        "peak_bytes_per_s": copy_bw,
        "source": source,
        "measured_copy_bytes_per_s": copy_bw,
    }


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _row(
    name: str, timing: dict[str, float], min_bytes: int, peak: float, **extra: object
) -> dict[str, object]:
    sec = timing["median_ms"] / 1e3
    gbs = min_bytes / sec / 1e9
    return {
        "op": name,
        **extra,
        **timing,
        "min_bytes": min_bytes,
        "GB_per_s": gbs,
        "fraction_of_peak": gbs * 1e9 / peak,
    }


def bench_segment_head(cfg: argparse.Namespace, device: torch.device, peak: float) -> list[dict[str, object]]:
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for b in cfg.batches:
        for c in cfg.classes:
            tokens = torch.randn(b, cfg.segments, cfg.dim, device=device, generator=g, dtype=cfg.dtype)
            text = torch.randn(c, cfg.dim, device=device, generator=g, dtype=cfg.dtype)
            maps = torch.rand(
                b, cfg.segments, cfg.grid, cfg.grid, device=device, generator=g, dtype=cfg.dtype
            )
            size = (cfg.size, cfg.size)
            min_bytes = _nbytes(tokens, text, maps) + b * cfg.size * cfg.size * LABEL_DTYPE.itemsize
            head = partial(segment_head, tokens, text, 100.0, maps, size, 0.5)
            calls = {"reference": partial(head, backend="torch")}
            if cfg.fused:
                calls["fused"] = partial(head, backend="triton")
            agree = None
            if cfg.fused:
                ref, fused = calls["reference"](), calls["fused"]()
                agree = (ref.labels == fused.labels).float().mean().item()
            for impl, fn in calls.items():
                t = time_call(fn, device, cfg.warmup, cfg.iters)
                extra = dict(impl=impl, B=b, C=c, K=cfg.segments, label_agreement=agree)
                rows.append(_row("segment_head", t, min_bytes, peak, **extra))
    return rows


def bench_upsample(cfg: argparse.Namespace, device: torch.device, peak: float) -> list[dict[str, object]]:
    rows = []
    for b in cfg.batches:
        maps = torch.rand(b, cfg.segments, cfg.grid, cfg.grid, device=device, dtype=cfg.dtype)
        table = torch.randint(1, 150, (b, cfg.segments), device=device, dtype=torch.int32)
        probs = torch.rand(b, cfg.segments, device=device)
        size = (cfg.size, cfg.size)
        min_bytes = _nbytes(maps, table, probs) + b * cfg.size * cfg.size * LABEL_DTYPE.itemsize
        calls = {"reference": partial(reference.upsample_labels_ref, maps, table, probs, size, 0.5)}
        if cfg.fused:
            from zeroseg.kernels.triton_upsample import upsample_labels_triton

            calls["fused"] = partial(upsample_labels_triton, maps, table, probs, size, 0.5)
        for impl, fn in calls.items():
            t = time_call(fn, device, cfg.warmup, cfg.iters)
            rows.append(_row("upsample", t, min_bytes, peak, impl=impl, B=b, K=cfg.segments))
    return rows


def _matmul_softmax(t_n: torch.Tensor, e_n: torch.Tensor, scale: float) -> torch.return_types.max:
    """The plain-torch way: cuBLAS logits, softmax in fp32, max; what the fused kernel replaces."""
    return torch.softmax((t_n @ e_n.T).mul_(scale), dim=-1, dtype=torch.float32).max(dim=-1)


def bench_similarity(cfg: argparse.Namespace, device: torch.device, peak: float) -> list[dict[str, object]]:
    """Dense patch tokens vs C classes: fused kernel vs cuBLAS matmul + softmax + max."""
    rows = []
    b, n, d = cfg.sim_batch, cfg.grid * cfg.grid, cfg.dim
    for c in cfg.classes:
        tokens = torch.randn(b, n, d, device=device, dtype=cfg.dtype)
        text = torch.randn(c, d, device=device, dtype=cfg.dtype)
        t_n = F.normalize(tokens.float(), dim=-1).to(cfg.dtype)
        e_n = F.normalize(text.float(), dim=-1).to(cfg.dtype)
        calls = {
            "matmul": partial(torch.matmul, t_n, e_n.T),
            "matmul+softmax": partial(_matmul_softmax, t_n, e_n, 100.0),
        }
        if cfg.fused:
            calls["fused"] = partial(token_text_similarity, tokens, text, 100.0, backend="triton")
        flops = 2 * b * n * c * d
        min_bytes = _nbytes(tokens, text) + b * n * (4 + 8)
        for impl, fn in calls.items():
            t = time_call(fn, device, cfg.warmup, cfg.iters)
            tflops = flops / (t["median_ms"] / 1e3) / 1e12
            rows.append(
                _row("similarity", t, min_bytes, peak, impl=impl, B=b, N=n, C=c, D=d, TFLOP_per_s=tflops)
            )
    return rows


def summarize(rows: list[dict[str, object]], peak_info: dict[str, object]) -> dict[str, object]:
    """The reported targets: speedups and bandwidth fraction, with whether each is met."""

    def pick(op, impl, **keys):
        for r in rows:
            if r["op"] == op and r["impl"] == impl and all(r.get(k) == v for k, v in keys.items()):
                return r
        return None

    out: dict[str, object] = {}
    ref, fused = pick("segment_head", "reference", B=16, C=150), pick("segment_head", "fused", B=16, C=150)
    if ref and fused:
        out["fused_segment_head_speedup_B16_C150"] = ref["median_ms"] / fused["median_ms"]
    fused_rows = [r for r in rows if r["impl"] == "fused" and r["op"] in ("segment_head", "upsample")]
    if fused_rows:
        out["fused_fraction_of_peak_bandwidth"] = max(r["fraction_of_peak"] for r in fused_rows)
    mm, fs = pick("similarity", "matmul+softmax", C=21843), pick("similarity", "fused", C=21843)
    if mm and fs:
        out["similarity_C21843_vs_cublas_speedup"] = mm["median_ms"] / fs["median_ms"]
    return {k: {"value": v, "target": TARGETS[k], "met": v >= TARGETS[k]} for k, v in out.items()}


def print_table(rows: list[dict[str, object]]) -> None:
    cols = ["op", "impl", "B", "C", "median_ms", "p90_ms", "GB_per_s", "fraction_of_peak", "TFLOP_per_s"]
    cols.append("label_agreement")
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    table = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`zeroseg-bench head` prints it as `error: ...`)."""

    def error(self, message: str) -> typing.NoReturn:
        raise SystemExit(f"{message}; see 'zeroseg-bench head --help'")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its message
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="JSON results file (via zeroseg-bench head: default bench-results/head.json)",
    )
    p.add_argument("--device", default="cuda", help="cuda (reference vs fused) or cpu (reference only)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few iterations: a smoke check")
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--warmup", type=_count(0), default=10)
    p.add_argument("--iters", type=_count(1), default=50)
    cfg = p.parse_args(argv)
    cfg.dtype = getattr(torch, cfg.dtype)
    cfg.segments = 8
    if cfg.quick:
        cfg.batches, cfg.classes, cfg.grid, cfg.size, cfg.dim, cfg.sim_batch = [1, 2], [21, 150], 7, 56, 64, 2
        cfg.warmup, cfg.iters = 1, 3
    else:
        cfg.batches, cfg.classes, cfg.grid, cfg.size, cfg.dim = [1, 16], [21, 150, 1000, 21843], 28, 448, 512
        cfg.sim_batch = 16
    return cfg


def main(argv: list[str] | None = None) -> dict[str, object]:
    cfg = parse_args(argv)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --quick for a reference-only smoke check")
    cfg.fused = device.type == "cuda"
    if device.type == "cpu" and cfg.dtype != torch.float32:
        cfg.dtype = torch.float32  # CPU half matmuls are slow and not what the head runs on CPU
    peak_info = peak_bandwidth(device, 1 << (26 if cfg.quick else 30))
    peak = float(peak_info["peak_bytes_per_s"])
    rows = (
        bench_segment_head(cfg, device, peak)
        + bench_upsample(cfg, device, peak)
        + bench_similarity(cfg, device, peak)
    )
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": peak_info["device"],
        "dtype": str(cfg.dtype),
        "quick": cfg.quick,
        "fused": cfg.fused,
    }
    if cfg.fused:
        import triton

        props = torch.cuda.get_device_properties(device)
        env.update(
            triton=triton.__version__,
            capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
        )
    result = {"env": env, "peak_bandwidth": peak_info, "rows": rows, "targets": summarize(rows, peak_info)}
    print(f"device: {peak_info['device']}  peak {peak / 1e9:.0f} GB/s ({peak_info['source']})")
    print_table(rows)
    for k, v in result["targets"].items():
        print(f"target {k}: {v['value']:.3g} (target >= {v['target']}) {'met' if v['met'] else 'NOT met'}")
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {cfg.out}")
    return result


if __name__ == "__main__":
    main()
