"""The environment a benchmark ran in: versions, CPU, threads, GPU, and the deployment runtimes.

Every JSON result carries `collect_env()` so that a number can be traced to the machine that gave it
(published FPS that users cannot reproduce is the most common complaint about deployment repos).
Nothing here imports triton or TensorRT: versions come from package metadata, availability from
`importlib.util.find_spec`; onnxruntime is imported only for its provider list (`runtimes=True`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

#: Distributions whose versions are reported (distribution name -> key in the JSON).
PACKAGES: dict[str, str] = {
    "zeroseg": "zeroseg",
    "torch": "torch",
    "triton": "triton",
    "open_clip_torch": "open_clip",
    "timm": "timm",
    "numpy": "numpy",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime_gpu",
    "tensorrt": "tensorrt",
    "openvino": "openvino",
    "ray": "ray",
}
#: Environment variables that change what a benchmark measures.
ENV_VARS: tuple[str, ...] = (
    "OMP_WAIT_POLICY",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "ZEROSEG_HEAD_BACKEND",
    "TRITON_INTERPRET",
)
#: Where TensorRT containers and packages put trtexec when it is not on PATH.
TRTEXEC_PLACES: tuple[str, ...] = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")
NVIDIA_SMI_FIELDS: tuple[str, ...] = (
    "driver_version",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "pstate",
)


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: CPU features that decide which backend wins (lscpu's flag names): int8 dot products (VNNI, AMX),
#: bf16, AVX-512 and AVX2 widths.
RELEVANT_FLAGS: tuple[str, ...] = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


def cpu_flags() -> list[str]:
    """The CPU's flags that matter for inference speed (`RELEVANT_FLAGS` present in /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in RELEVANT_FLAGS if f in have]
    except OSError:
        pass
    return []


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_block() -> dict[str, Any]:
    """CPU model, cores, torch's thread pools, load average."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "model": cpu_model(),
        "machine": platform.machine(),
        "flags": cpu_flags(),
        "flags_absent": [f for f in RELEVANT_FLAGS if f not in cpu_flags()],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_1_5_15": load_average(),
    }


def nvidia_smi(index: int = 0) -> dict[str, str] | None:
    """Driver, clocks, power and temperature of GPU `index` from nvidia-smi, or None without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--id={index}", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    values = [v.strip() for v in out.split(",")]
    if len(values) != len(NVIDIA_SMI_FIELDS):
        return None
    return dict(zip(NVIDIA_SMI_FIELDS, values, strict=True))


def cuda_block(device: torch.device | None = None) -> dict[str, Any]:
    """CUDA runtime and the GPU the benchmark used (or GPU 0): name, capability, memory, clocks."""
    block: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return block
    index = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
    props = torch.cuda.get_device_properties(index)
    block.update(
        device_count=torch.cuda.device_count(),
        index=index,
        name=props.name,
        capability=f"{props.major}.{props.minor}",
        total_memory_bytes=props.total_memory,
        multiprocessors=props.multi_processor_count,
        cudnn=torch.backends.cudnn.version(),
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        nvidia_smi=nvidia_smi(index),
    )
    return block


def runtimes_block() -> dict[str, Any]:
    """Which deployment runtimes this machine has: TensorRT (python package, trtexec), ONNX Runtime."""
    trtexec = shutil.which("trtexec") or next((p for p in TRTEXEC_PLACES if os.access(p, os.X_OK)), None)
    block: dict[str, Any] = {
        "tensorrt": {
            "python_package": importlib.util.find_spec("tensorrt") is not None,
            "version": package_version("tensorrt"),
            "trtexec": trtexec,
        },
        "onnxruntime": {"version": package_version("onnxruntime") or package_version("onnxruntime-gpu")},
        "triton": {"importable": importlib.util.find_spec("triton") is not None},
    }
    try:
        import onnxruntime

        block["onnxruntime"]["providers"] = list(onnxruntime.get_available_providers())
    except Exception as exc:  # ImportError, or a broken install
        block["onnxruntime"]["providers"] = []
        block["onnxruntime"]["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return block


def collect_env(device: torch.device | None = None, *, runtimes: bool = False) -> dict[str, Any]:
    """The environment block of every result: versions, platform, CPU, CUDA (+ runtimes on request)."""
    env: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {key: package_version(dist) for dist, key in PACKAGES.items()},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_block(),
        "cuda": cuda_block(device),
        "env_vars": {name: os.environ[name] for name in ENV_VARS if name in os.environ},
    }
    env["versions"]["torch_runtime"] = torch.__version__
    if device is not None:
        env["device"] = str(device)
        env["device_name"] = env["cuda"].get("name") if device.type == "cuda" else env["cpu"]["model"]
    if runtimes:
        env["runtimes"] = runtimes_block()
    return env


def mark_end(env: dict[str, Any]) -> dict[str, Any]:
    """Record the load average at the end of a run next to the one at its start."""
    env["cpu"]["load_average_end"] = load_average()
    return env


def busy_warning(env: dict[str, Any]) -> str | None:
    """A warning when other work competed for the CPUs (1-minute load above the usable CPUs)."""
    cpu = env.get("cpu", {})
    cpus = cpu.get("usable_cpus") or 1
    loads = [x[0] for x in (cpu.get("load_average_1_5_15"), cpu.get("load_average_end")) if x]
    if loads and max(loads) > cpus:
        hint = " (with several torch threads they also stall each other: try --threads 1)"
        return (
            f"the 1-minute load average reached {max(loads):.1f} on {cpus} CPUs: other processes competed for"
            " the cores, so CPU timings are pessimistic and noisy"
            + (hint if cpu.get("torch_threads", 1) > 1 else "")
        )
    return None
