"""What the side-by-side bench measures on one backend: staged latency, memory, accuracy, FLOPs.

* `StageClock` times a real pipeline call, `seg(images, classes, batch_size=B)` with the
  vocabulary cached, and the stages inside it, by wrapping the instance's own `preprocess`,
  `forward` and `head` (the device synchronised around each; `perf_counter` on the CPU, CUDA
  events around the whole call on a GPU). So "full" is exactly what a caller pays, and the stages
  add up to it minus the call's own bookkeeping.
* `Memory` measures the resident set around a series: Linux's high-water mark is reset first
  (`zeroseg.bench.memory`), so the peak is the series' own; on CUDA, the allocator's peak.
* `Recorder` wraps a segmenter for `zeroseg.evaluation.evaluate`, keeping every label map so that
  pixel agreement with torch is counted on the very images the mIoU was scored on.
FLOPs (attention included) are counted in `zeroseg.bench.compare.flops`, the CPU's peaks in
`zeroseg.bench.compare.peak`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from zeroseg.bench.memory import high_water_bytes, page_rss_bytes, reset_peak_rss
from zeroseg.bench.timing import synchronize

STAGES: tuple[str, ...] = ("preprocess", "encoder", "head", "encoder_head", "full")
_WRAPPED = {"preprocess": "preprocess", "forward": "encoder", "head": "head"}


class StageClock:
    """Times `seg(images, classes)` and its stages (see the module docstring); `close()` unwraps."""

    def __init__(self, seg, device: torch.device) -> None:
        self.seg, self.device = seg, device
        self.marks: dict[str, float] = {}
        for method, stage in _WRAPPED.items():
            setattr(seg, method, self._timed(stage, getattr(seg, method)))

    def _timed(self, stage: str, fn):
        def timed(*args, **kwargs):
            synchronize(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize(self.device)
            self.marks[stage] = self.marks.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3
            return out

        return timed

    def call(self, images: Sequence, classes, batch_size: int) -> tuple[dict[str, float], list]:
        """One timed pipeline call: ({stage: ms}, the results)."""
        self.marks = {}
        synchronize(self.device)
        if self.device.type == "cuda":  # CUDA events around the call (the stages still synchronise)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            results = self.seg(images, classes, batch_size=batch_size)
            end.record()
            end.synchronize()
            full = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            results = self.seg(images, classes, batch_size=batch_size)
            full = (time.perf_counter() - t0) * 1e3
        marks = {stage: self.marks.get(stage, 0.0) for stage in ("preprocess", "encoder", "head")}
        marks["encoder_head"] = marks["encoder"] + marks["head"]
        marks["full"] = full
        return marks, results

    def series(self, images: Sequence, classes, batch_size: int, *, warmup: int, iters: int) -> dict:
        """`warmup` discarded calls, then `iters` timed ones: {stage: [ms per call]}."""
        for _ in range(warmup):
            self.call(images, classes, batch_size)
        samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for _ in range(iters):
            marks, _ = self.call(images, classes, batch_size)
            for stage in STAGES:
                samples[stage].append(marks[stage])
        return samples

    def close(self) -> None:
        """Remove the wrappers (the segmenter's own methods show through again)."""
        for method in _WRAPPED:
            self.seg.__dict__.pop(method, None)


class Memory:
    """Peak memory of what runs between `start()` and `stop()`, in MiB above the start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_allocated" if device.type == "cuda" else "cpu_rss_high_water"

    def current(self) -> int:
        """Bytes in use now: the allocator's on CUDA, the resident set on the CPU (0 if unknown)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return page_rss_bytes() or 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()
        self.before = self.current()

    def stop(self) -> float | None:
        """MiB of the peak above the start, or None where the platform cannot tell."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = high_water_bytes()
            if peak is None or not self.before:
                return None
        return max(0, peak - self.before) / 2**20


class Recorder:
    """A segmenter for `evaluate` that keeps every label map it returned, in order."""

    def __init__(self, seg) -> None:
        self.seg = seg
        self.labels: list[np.ndarray] = []

    def __call__(self, images, classes, **kwargs) -> list:
        results = self.seg(images, classes, **kwargs)
        self.labels.extend(np.asarray(r.labels) for r in results)
        return results


def pixel_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float | None:
    """Fraction of pixels whose labels equal the reference's, over all images (None: nothing to compare)."""
    if not reference or len(reference) != len(other):
        return None
    same = sum(int(np.count_nonzero(a == b)) for a, b in zip(reference, other, strict=True))
    total = sum(a.size for a in reference)
    return same / total if total else None


def embedding_cosine(torch_seg, seg, images: Sequence, size: tuple[int, int]) -> dict[str, float] | None:
    """Cosine between an ONNX backend's segment embeddings and torch's, per segment: mean and min.

    Only backends with an `encode(pixels)` entry point (the ONNX bundle's image encoder) have one.
    """
    if not hasattr(seg, "encode"):
        return None
    with torch.no_grad():
        pixels = torch_seg.preprocess(list(images), size)
        ref = torch_seg.forward(pixels).segments.float().cpu().numpy()
    got = np.asarray(seg.encode(pixels.cpu().numpy())[0], dtype=np.float32)
    num = (ref * got).sum(-1)
    cos = num / np.maximum(np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1), 1e-12)
    return {"mean": float(cos.mean()), "min": float(cos.min())}
