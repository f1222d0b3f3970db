"""Timing primitives shared by the benchmarks: synchronised samples and their distribution.

`sample_times` runs a call `warmup` times (discarded), then `iters` timed times, and returns one
duration per call in milliseconds. Two clocks:

* wall clock (default): `time.perf_counter` around the call, with the device synchronised before the
  first call and after every call, so a CUDA call's queued kernels are inside its own sample. This is
  the latency a caller sees, host overhead and launch included;
* CUDA events (`cuda_events=True`, CUDA only): device time between two events around the call, as the
  kernel benchmark reports it; on CPU it falls back to the wall clock without synchronisation.

`describe` turns samples into mean / sd / min / max / p50 / p90 / p95 / p99 (percentiles with linear
interpolation between order statistics, numpy's default; sd with n - 1), plus the spread of the
per-repeat means when the samples came from several repeats.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

#: Percentiles every stage reports.
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_times(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    cuda_events: bool = False,
) -> list[float]:
    """Milliseconds of each of `iters` calls of `fn`, after `warmup` discarded calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    if cuda_events and device.type == "cuda":
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    elif cuda_events:  # CPU: the kernel benchmark's plain clock
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of a single synchronised call (a cold start: nothing is discarded)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean."""
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def describe(repeats: Sequence[Sequence[float]], unit: str = "ms") -> dict[str, float | int | list[float]]:
    """Distribution of samples pooled over repeats, plus the repeat-to-repeat spread of their means.

    repeats: one list of samples per repeat (a single repeat is `[samples]`). Keys carry the unit:
    mean_ms, sd_ms, min_ms, max_ms, p50_ms ... p99_ms, repeat_means_ms, repeat_sd_ms, and repeat_cv
    (sd of the repeat means over their mean: how reproducible the figure is).
    """
    pooled = [v for rep in repeats for v in rep]
    if not pooled or any(not rep for rep in repeats):
        raise ValueError("every repeat needs at least one sample")
    means = [mean(rep) for rep in repeats]
    out: dict[str, float | int | list[float]] = {
        "n": len(pooled),
        "repeats": len(repeats),
        f"mean_{unit}": mean(pooled),
        f"sd_{unit}": stdev(pooled),
        f"min_{unit}": min(pooled),
        f"max_{unit}": max(pooled),
    }
    for q in PERCENTILES:
        out[f"p{q}_{unit}"] = percentile(pooled, q)
    out[f"repeat_means_{unit}"] = means
    out[f"repeat_sd_{unit}"] = stdev(means)
    out["repeat_cv"] = stdev(means) / mean(means) if mean(means) > 0 else 0.0
    return out


def rate(count: float, repeats_ms: Sequence[Sequence[float]]) -> dict[str, float | list[float]]:
    """Items per second when each call handles `count` items: per repeat (count / mean time), and
    their mean and sd (mmseg's average_fps and its variance across --repeat-times)."""
    per_repeat = [count / (mean(rep) / 1e3) for rep in repeats_ms]
    return {"mean": mean(per_repeat), "sd": stdev(per_repeat), "per_repeat": per_repeat}
