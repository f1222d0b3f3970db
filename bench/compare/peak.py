"""The CPU's theoretical fp32 and int8 peaks, and the peak each row of the bench is measured against.

peak = usable CPUs x clock x operations per cycle per core, where

* the clock is `cpuinfo_max_freq` of /sys/devices/system/cpu/cpu*/cpufreq (the highest clock the
  kernel may run the core at) where the kernel exposes it, else the highest "cpu MHz" of
  /proc/cpuinfo (on a virtual machine without cpufreq: the clock the hypervisor reports, usually the
  host's base clock; turbo can run above it, so a fraction over 100 % is possible there);
* fp32 FLOP/cycle = 2 FMA ports x lanes x 2 (a fused multiply-add is 2 FLOP): 8 lanes with AVX2 + FMA
  (32), 16 with AVX-512F (64); 8 without AVX2 (SSE: 4 lanes, separate multiply and add ports);
* int8 op/cycle (a multiply-add is 2 ops, like FLOPs) by the instruction ONNX Runtime's MLAS int8 GEMM
  uses, per the CPU flags:
    amx_int8         AMX tile multiply: 1024 multiply-adds per cycle (2048 ops);
    avx512_vnni      `vpdpbusd` on 512 bits: 2 ports x 16 lanes x 4 multiply-adds x 2 = 256;
    avx_vnni         `vpdpbusd` on 256 bits: 2 x 8 x 4 x 2 = 128;
    no VNNI          `vpmaddubsw` (u8 x s8 pairs summed to s16) then `vpmaddwd` (s16 pairs to s32):
                     2 multiply-port instructions per 4 multiply-adds of each 32-bit lane, so one pair
                     per cycle on 2 ports: lanes x 4 x 2 = 64 with AVX2, 128 with AVX-512BW; i.e. twice
                     the fp32 rate of the same width.

A row is measured against the peak of what it runs: fp32 rows against the fp32 peak; an int8 row
against the peak of its mix, each FLOP at its own precision's rate (time at peak = int8 FLOPs / int8
peak + the rest / fp32 peak), because a weight-only int8 graph leaves attention in fp32.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path


def cpu_clock_mhz() -> tuple[float, str] | None:
    """(MHz, where it was read) of the CPU's clock (module docstring), or None where neither source exists."""
    khz = []
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq"):
        try:
            khz.append(int(Path(path).read_text().strip()))
        except (OSError, ValueError):
            continue
    if khz:
        return max(khz) / 1e3, "cpufreq cpuinfo_max_freq (the highest clock the kernel allows)"
    try:
        mhz = [
            float(line.split(":", 1)[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.lower().startswith("cpu mhz")
        ]
    except (OSError, ValueError):
        return None
    if not mhz:
        return None
    return max(mhz), "/proc/cpuinfo 'cpu MHz' (no cpufreq here: the reported clock, turbo may exceed it)"


def fp32_per_cycle(flags: set[str]) -> tuple[int, str]:
    """fp32 FLOP per cycle per core and the rule that gave it."""
    if "avx512f" in flags:
        return 64, "AVX-512F: 2 FMA ports x 16 lanes x 2"
    if {"avx2", "fma"} <= flags:
        return 32, "AVX2+FMA: 2 FMA ports x 8 lanes x 2"
    return 8, "no AVX2/FMA: 4 SSE lanes x (1 multiply + 1 add port)"


def int8_per_cycle(flags: set[str]) -> tuple[int, str]:
    """int8 ops (2 per multiply-add) per cycle per core and the instruction path that gives it."""
    if "amx_int8" in flags:
        return 2048, "AMX-INT8 tile multiply: 1024 multiply-adds/cycle"
    if "avx512_vnni" in flags:
        return 256, "AVX512-VNNI vpdpbusd: 2 ports x 16 lanes x 4 multiply-adds x 2"
    if "avx_vnni" in flags:
        return 128, "AVX-VNNI vpdpbusd: 2 ports x 8 lanes x 4 multiply-adds x 2"
    if "avx512bw" in flags:
        return 128, "AVX-512BW without VNNI: vpmaddubsw+vpmaddwd, 16 lanes x 4 multiply-adds x 2 per cycle"
    if "avx2" in flags:
        return 64, "AVX2 without VNNI: vpmaddubsw+vpmaddwd, 8 lanes x 4 multiply-adds x 2 per cycle"
    return 16, "no AVX2: SSE pmaddubsw+pmaddwd, 4 lanes x 4 multiply-adds x 2 per 2 cycles"


def cpu_peaks(cpu_flags: Sequence[str], cpus: int, clock: tuple[float, str] | None = None) -> dict | None:
    """The CPU's fp32 and int8 peaks (GFLOP/s, Gop/s) with the rules used; None where the clock is unknown.

    `clock` (MHz, source) overrides reading it (`cpu_clock_mhz`), for tests.
    """
    clock = clock if clock is not None else cpu_clock_mhz()
    if clock is None or clock[0] <= 0:
        return None
    mhz, source = clock
    flags = set(cpu_flags)
    fp32, fp32_rule = fp32_per_cycle(flags)
    int8, int8_rule = int8_per_cycle(flags)
    ghz = mhz / 1e3
    return {
        "gflops": cpus * ghz * fp32,  # the fp32 peak (the field's name since v1)
        "int8_gops": cpus * ghz * int8,
        "cpus": cpus,
        "clock_mhz": mhz,
        "clock_source": source,
        "fp32_flop_per_cycle": fp32,
        "int8_op_per_cycle": int8,
        "rule": f"{cpus} CPUs x {mhz:.0f} MHz x {fp32} fp32 FLOP/cycle ({fp32_rule})",
        "int8_rule": f"{cpus} CPUs x {mhz:.0f} MHz x {int8} int8 op/cycle ({int8_rule})",
        "note": "theoretical: SMT siblings share the FMA ports, AVX clock offsets and turbo move the clock",
    }


def row_peak(peaks: dict | None, precision: str, int8_share: float | None) -> tuple[float | None, str | None]:
    """(peak in G(FL)OP/s, which one) a row of `precision` is measured against (module docstring).

    `int8_share`: the fraction of the row's FLOPs run in int8 (None for an fp32 row).
    """
    if not peaks:
        return None, None
    if precision != "int8" or not peaks.get("int8_gops"):
        return peaks["gflops"], "fp32"
    share = 1.0 if int8_share is None else int8_share
    if share >= 1.0:
        return peaks["int8_gops"], "int8"
    seconds = share / peaks["int8_gops"] + (1.0 - share) / peaks["gflops"]
    return 1.0 / seconds, f"int8 for {share:.0%} of the FLOPs, fp32 for the rest"
