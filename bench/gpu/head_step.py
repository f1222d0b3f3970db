"""Step "head": the fused Triton segment head against the PyTorch reference at one size.

The inputs and the bytes counted are `zeroseg.bench.head_bench`'s (K = 8 segment tokens of width D,
their (grid x grid) maps upsampled to (side x side) labels, C class embeddings): its minimum bytes are
the op's inputs and its int32 label map, and the fraction of peak is those bytes over the fused
call's median time, against the device's peak memory bandwidth (`zeroseg.bench.gpu.peaks`). Timing
is head_bench's: CUDA events around each call after warm-up, median of the timed calls.

In a dry run (CPU) the fused side is Triton in its interpreter when TRITON_INTERPRET=1 was set before
triton was imported, else the vectorised plain-torch path stands in for it (the result names which).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from zeroseg.errors import ZerosegError


@dataclass(frozen=True)
class HeadSize:
    """The head's problem size (the issue's: B = 16, C = 150, 448x448 labels from 28x28 maps)."""

    batch: int = 16
    classes: int = 150
    side: int = 448
    grid: int = 28
    dim: int = 512
    segments: int = 8


def fused_backend(device: torch.device, dry_run: bool) -> str:
    """ "triton" where it can run on `device`; in a dry run without the interpreter, "vectorized"."""
    from zeroseg.kernels import available_backends

    if "triton" in available_backends(device):
        return "triton"
    if dry_run:
        return "vectorized"
    raise ZerosegError("the Triton head cannot run here: install triton (it ships with CUDA torch)")


def run_head(size: HeadSize, device: torch.device, dtype: torch.dtype, peak: dict[str, Any], *,
             dry_run: bool, warmup: int, iters: int) -> dict[str, Any]:  # fmt: skip
    """Time the reference and the fused head on random inputs of `size`; the step's result."""
    from zeroseg.bench.head_bench import LABEL_DTYPE, _nbytes, time_call
    from zeroseg.kernels import segment_head

    if device.type == "cpu":
        dtype = torch.float32  # as head_bench: CPU half matmuls are slow and not what the CPU runs
    g = torch.Generator(device=device).manual_seed(0)
    b, k, n = size.batch, size.segments, size.grid
    tokens = torch.randn(b, k, size.dim, device=device, generator=g, dtype=dtype)
    text = torch.randn(size.classes, size.dim, device=device, generator=g, dtype=dtype)
    maps = torch.rand(b, k, n, n, device=device, generator=g, dtype=dtype)
    min_bytes = _nbytes(tokens, text, maps) + b * size.side * size.side * LABEL_DTYPE.itemsize
    fused = fused_backend(device, dry_run)
    head = partial(segment_head, tokens, text, 100.0, maps, (size.side, size.side), 0.5)
    ref_labels, fused_labels = head(backend="torch").labels, head(backend=fused).labels
    agreement = (ref_labels == fused_labels).float().mean().item()
    ref_t = time_call(partial(head, backend="torch"), device, warmup, iters)
    fused_t = time_call(partial(head, backend=fused), device, warmup, iters)
    bytes_per_s = min_bytes / (fused_t["median_ms"] / 1e3)
    return {
        "status": "ok",
        "reason": None,
        "size": {"B": b, "C": size.classes, "K": k, "grid": n, "side": size.side, "D": size.dim},
        "dtype": str(dtype).removeprefix("torch."),
        "reference_backend": "torch",
        "fused_backend": fused if fused == "triton" else "vectorized (stand-in: no Triton interpreter)",
        "reference_ms": ref_t,
        "fused_ms": fused_t,
        "speedup": ref_t["median_ms"] / fused_t["median_ms"],
        "min_bytes": min_bytes,
        "fused_GB_per_s": bytes_per_s / 1e9,
        "fraction_of_peak_bandwidth": bytes_per_s / float(peak["peak_bytes_per_s"]),
        "label_agreement": agreement,
    }
