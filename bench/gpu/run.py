"""`zeroseg-bench gpu`: the one-call GPU check — kernels compiled, fused head, engines — into one folder.

Steps, in this order, each timed and recorded whatever happens to the others:

1. kernels — the Triton kernels' tests, compiled on the device (`zeroseg.bench.gpu.kernels_step`);
2. head — the fused head vs the reference, speed-up and fraction of HBM bandwidth (`head_step`);
3. models — eager / torch.compile / AOTInductor of the bundled and `base` students (`models_step`).

A step that raises is recorded as failed with a one-line reason and the next one runs. A global time
budget (--budget-s) is checked before each step (and inside the models step before each engine and
batch): what no longer fits is recorded as skipped with the reason; a compile already started is not
interrupted, so the run can overrun the budget by at most one compile (hence the default below the
8-minute target). The kernel tests get at most `KERNELS_SHARE` of the budget.

Writes `gpu.json` (atomically, `zeroseg.bench.common.write_result`) and `gpu.md` into --out and nothing
else there; scratch files (the AOTInductor packages) live in a hidden folder inside --out, removed at
the end. Without a CUDA device, and without --dry-run, it refuses before writing anything.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeroseg.errors import ZerosegError

STEPS = ("kernels", "head", "models")
SCHEMA = "zeroseg-bench/gpu/v1"
JSON_NAME, MARKDOWN_NAME = "gpu.json", "gpu.md"
NO_CUDA = "no CUDA device: run on a GPU machine or pass --dry-run"
#: Fraction of the budget the kernel tests may take (a timeout, recorded as a failure).
KERNELS_SHARE = 0.4


@dataclass(frozen=True)
class GpuSettings:
    """What `zeroseg-bench gpu` was asked for (see the command's options)."""

    out: Path
    dry_run: bool = False
    budget_s: float = 420.0
    steps: tuple[str, ...] = STEPS
    precision: str = "bf16"
    warmup: int = 5
    iters: int = 30

    def validate(self) -> GpuSettings:
        """Raise a one-line ZerosegError on a bad option; return self."""
        from zeroseg.bench.gpu.models_step import DTYPES

        if self.precision not in DTYPES:
            raise ZerosegError(f"--precision must be one of {', '.join(DTYPES)}, got {self.precision!r}")
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or not self.steps:
            raise ZerosegError(
                f"--steps takes a comma list of {', '.join(STEPS)}, got {','.join(self.steps)!r}"
            )
        if not self.budget_s > 0:
            raise ZerosegError(f"--budget-s must be positive, got {self.budget_s}")
        return self


class Budget:
    """Seconds left of a global time budget started at construction."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def why_skipped(self, needed: float) -> str:
        """The reason recorded for work that did not fit."""
        need = f"needs ~{needed:.0f} s, " if needed > 0 else ""
        return f"time budget: {need}{max(0.0, self.left()):.0f} s left of --budget-s {self.seconds:.0f}"


def plans(dry_run: bool, warmup: int, iters: int):
    """(HeadSize, ModelPlan, head warm-up, head iters) of a real or a dry run."""
    from zeroseg.bench.gpu.head_step import HeadSize
    from zeroseg.bench.gpu.models_step import ModelPlan

    if dry_run:
        warmup, iters = min(warmup, 1), min(iters, 3)
        plan = ModelPlan(batches=(1, 2), base_preset="tiny", base_hw=(32, 32), bundled_hw=(32, 32),
                         warmup=warmup, iters=iters, dry_run=True)  # fmt: skip
        return HeadSize(batch=2, classes=5, side=32, grid=4, dim=64), plan, warmup, iters
    return HeadSize(), ModelPlan(warmup=warmup, iters=iters), max(warmup, 10), max(iters, 50)


def run_step(name: str, fn: Callable[[], dict[str, Any]], budget: Budget, log) -> dict[str, Any]:
    """Run one step if the budget allows; its result with status, reason and seconds."""
    if budget.left() <= 0:
        return {"status": "skipped", "reason": budget.why_skipped(0.0), "seconds": 0.0}
    from zeroseg.bench.gpu.models_step import one_line

    log(f"[{budget.elapsed():5.0f} s] step {name} ...")
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a step's failure is recorded; the others still run
        result = {"status": "failed", "reason": one_line(exc)}
    result["seconds"] = time.perf_counter() - started
    log(
        f"[{budget.elapsed():5.0f} s] step {name}: {result['status']}"
        + (f" ({result['reason']})" if result.get("reason") else "")
    )
    return result


def check_out(out: Path) -> None:
    """Refuse an --out that is a file or lies below one (one line; nothing created)."""
    from zeroseg.utils.writable import ensure_writable_dir

    ensure_writable_dir(out, "--out", create=False)


def run_gpu_check(settings: GpuSettings, *, log=print) -> dict[str, Any]:
    """Run the steps asked for and write gpu.json and gpu.md into `settings.out`.

    Returns:
        The result written to gpu.json.

    Raises:
        ZerosegError: no CUDA device without --dry-run, or an unusable --out (nothing written).
    """
    from zeroseg.bench.env import collect_env, mark_end
    from zeroseg.bench.gpu import head_step, kernels_step, models_step, peaks
    from zeroseg.bench.gpu.report import markdown

    settings = settings.validate()
    if not settings.dry_run and not torch.cuda.is_available():
        raise ZerosegError(NO_CUDA)
    out = Path(settings.out)
    check_out(out)
    device = torch.device("cpu" if settings.dry_run else "cuda")
    budget = Budget(settings.budget_s)
    head_size, plan, head_warmup, head_iters = plans(settings.dry_run, settings.warmup, settings.iters)
    info = peaks.device_block(device)
    bandwidth = peaks.bandwidth_peak(device, settings.dry_run)
    compute = peaks.compute_peak(info["name"], device.type, settings.precision)
    head_dtype = models_step.DTYPES[settings.precision]
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".gpu-work-", dir=out))
    jobs = {
        "kernels": lambda: kernels_step.run_kernel_tests(
            dry_run=settings.dry_run, timeout_s=min(budget.left(), KERNELS_SHARE * settings.budget_s)
        ),
        "head": lambda: head_step.run_head(
            head_size,
            device,
            head_dtype,
            bandwidth,
            dry_run=settings.dry_run,
            warmup=head_warmup,
            iters=head_iters,
        ),  # fmt: skip
        "models": lambda: models_step.run_models(
            plan, device, settings.precision, compute["tflops"], budget, work
        ),
    }
    env = collect_env(device)
    steps: dict[str, Any] = {}
    try:
        for name in STEPS:
            if name in settings.steps:
                steps[name] = run_step(name, jobs[name], budget, log)
            else:
                steps[name] = {"status": "skipped", "reason": "not in --steps", "seconds": 0.0}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "schema": SCHEMA, "command": "gpu", "dry_run": settings.dry_run,
        "settings": {"budget_s": settings.budget_s, "steps": list(settings.steps),
                     "precision": settings.precision, "warmup": plan.warmup, "iters": plan.iters,
                     "head_warmup": head_warmup, "head_iters": head_iters},
        "device": info, "peaks": {"bandwidth": bandwidth, "compute": compute},
        "steps": steps, "total_seconds": budget.elapsed(), "env": mark_end(env),
    }  # fmt: skip
    return write_outputs(result, out, markdown(result))


def write_outputs(result: dict[str, Any], out: Path, text: str) -> dict[str, Any]:
    """gpu.json and gpu.md into `out`, each atomically."""
    from zeroseg.bench.common import write_result
    from zeroseg.utils.atomic import atomic_write_bytes

    write_result(out / JSON_NAME, result)
    atomic_write_bytes(out / MARKDOWN_NAME, text.encode())
    return result
