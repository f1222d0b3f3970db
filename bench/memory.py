"""Memory of a benchmarked call: CPU resident set (with the kernel's high-water mark) and GPU allocator peaks.

On Linux the RSS high-water mark can be reset (`/proc/self/clear_refs`, "5"), so a peak measured
after an earlier, larger one is still the peak of the measured span; elsewhere (or where the reset
is refused) `getrusage`'s lifetime peak is all there is, and the result says whether it is reliable.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch


def page_rss_bytes() -> int | None:
    """Current resident set size (Linux /proc/self/statm), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    """The process's peak RSS from getrusage (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class MemoryProbe:
    """Peak memory of what runs between `start()` and `stop()` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.reset = reset_peak_rss()
            self.before = page_rss_bytes() or maxrss_bytes()
            self.max_before = maxrss_bytes()

    def stop(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {
                "kind": "cuda_allocated",
                "before_bytes": self.before,
                "peak_bytes": peak,
                "peak_increase_bytes": peak - self.before,
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device),
                "what": "torch.cuda.max_memory_allocated over the warm-up and timed steps; 'before' holds "
                "the model, the input batch and the targets; the increase is activations, gradients, "
                "optimizer state and temporaries",
            }
        peak = maxrss_bytes()
        reliable = self.reset or peak > self.max_before
        return {
            "kind": "cpu_rss",
            "before_bytes": self.before,
            "peak_bytes": peak,
            "peak_increase_bytes": max(0, peak - self.before),
            "high_water_mark_reset": self.reset,
            "reliable": reliable,
            "what": "process peak RSS (resource.getrusage ru_maxrss) over the warm-up and timed steps minus "
            "the RSS just before them (model, input batch and targets already resident); the increase is "
            "activations, gradients, AdamW state, temporaries and allocator growth"
            + ("" if reliable else "; UNRELIABLE: the run never exceeded an earlier peak of this process"),
        }


def high_water_bytes() -> int | None:
    """The RSS high-water mark since the last `reset_peak_rss` (Linux VmHWM), or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
