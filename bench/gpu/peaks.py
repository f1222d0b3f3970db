"""Peak figures of the device `zeroseg-bench gpu` runs on: memory bandwidth and dense compute.

Both come from datasheet tables keyed by the device name (`torch.cuda.get_device_properties(d).name`,
e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200"): the first entry whose words all
appear in the upper-cased name wins, so the more specific entries (PCIe, NVL) come first.

* Memory bandwidth: `zeroseg.bench.head_bench.PEAK_BANDWIDTH` (one table for both benchmarks; H100
  SXM 3.35 TB/s, H100 PCIe 2.0 TB/s, H200 4.8 TB/s). A device not in it gets the bandwidth of a
  measured device-to-device copy instead (`head_bench.peak_bandwidth`), and the result says so.
* Dense compute (`PEAK_TFLOPS`): NVIDIA's datasheets give tensor-core figures *with 2:4 sparsity*;
  the dense figure is half of it (bf16 and fp16 the same). fp32 is the CUDA cores' non-tensor figure.
  A device not in the table (and the CPU of a dry run) has no compute peak: model FLOP utilisation
  is then null, never a guess.
"""

from __future__ import annotations

from typing import Any

import torch

#: Dense TFLOP/s per precision (datasheet sparse tensor-core figure / 2); first matching rule wins.
PEAK_TFLOPS: list[tuple[tuple[str, ...], dict[str, float]]] = [
    (("H200", "NVL"), {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.3}),
    (("H200",), {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9}),  # SXM
    (("H100", "PCIE"), {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (("H100", "NVL"), {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (("H100",), {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9}),  # SXM5
    (("A100",), {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (("L40S",), {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
]
RULE = (
    "datasheet table keyed by words of torch.cuda.get_device_properties(d).name (first match wins); "
    "dense tensor-core TFLOP/s = the datasheet's 2:4-sparsity figure / 2; fp32 = CUDA-core figure"
)


def device_block(device: torch.device) -> dict[str, Any]:
    """Name, kind and (on CUDA) capability, SM count and memory of `device`."""
    if device.type != "cuda":
        import platform

        return {"type": device.type, "name": platform.processor() or platform.machine() or "cpu"}
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "memory_bytes": int(props.total_memory),
    }


def compute_peak(name: str, device_type: str, precision: str) -> dict[str, Any]:
    """The dense compute peak for `precision` (bf16, fp16, tf32, fp32) of the device called `name`.

    Returns:
        {"tflops": float or None, "precision", "source"}: None where no table entry matches (or on
        the CPU, whose peak this command does not estimate).
    """
    if device_type == "cuda":
        upper = name.upper()
        for words, peaks in PEAK_TFLOPS:
            if all(w in upper for w in words):
                return {"tflops": peaks[precision], "precision": precision,
                        "source": f"datasheet table entry {' '.join(words)} ({RULE})"}  # fmt: skip
        return {"tflops": None, "precision": precision, "source": f"{name!r} is not in the datasheet table"}
    return {"tflops": None, "precision": precision, "source": "no compute peak for a CPU (dry run)"}


def bandwidth_peak(device: torch.device, dry_run: bool) -> dict[str, Any]:
    """Peak memory bandwidth (`head_bench.peak_bandwidth`: datasheet table, else a measured copy)."""
    from zeroseg.bench.head_bench import peak_bandwidth

    return dict(peak_bandwidth(device, 1 << (22 if dry_run else 30)))
