"""Step "models": the student network on eager PyTorch, torch.compile and an AOTInductor package.

What runs: `zeroseg.export.graphs.ImageEncoderGraph` (pixels in [0, 1] -> segment embeddings and
patch -> segment maps: the network every engine exports, the label head excluded: step "head" times
it) of two models: the bundled ShapeWorld model at its inference size of a 640x480 image, and a
seeded random-weight student of the `base` preset (ViT-B/16, the paper's model) at 448x448, built
in memory (no checkpoint file is written). Each at batch 1 and 32, in the precision asked for
(bf16 / fp16: weights and inputs cast; tf32: fp32 weights with TF32 matmuls; fp32: no TF32).

Engines: eager; `torch.compile(dynamic=False)` (one static compile per batch size, inductor);
AOTInductor: `torch.export` with a dynamic batch (1..max batch), `aoti_compile_and_package` with the
exporter's options (`zeroseg.export.aoti.compile.inductor_options`) with the model on CUDA, loaded
back with `aoti_load_package`; the package lives in a scratch folder inside --out, removed after.

Timing: a first (cold) call, timed on its own (it holds the compile), then `bench.timing.sample_times`
wall clock with the device synchronised after every call; p50 and p90 ms, images/s = batch / p50.
FLOPs per image: `torch.utils.flop_counter` on a batch-1 eager call with SDPA forced to its math
kernel, so attention is counted as its two matmuls on every device (softmax and elementwise ops are
not FLOPs there); model FLOP utilisation = FLOPs/image x images/s / the dense peak of the precision.

A dry run: the bundled model at 32x32 and the `tiny` preset instead of `base`, batch 1 and 2, on the
CPU; torch.compile with the `eager` backend (Dynamo really captures the graph, once per batch size as
on the GPU; no Inductor build), and the AOTInductor row traced only (`torch.export`, run as
`ExportedProgram.module()`): an Inductor C++ compile takes minutes on two cores.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ENGINES = ("eager", "compile", "aoti")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32, "fp32": torch.float32}
#: Seconds of budget an engine's preparation needs on the GPU before it is started (else skipped).
PREPARE_RESERVE_S = {"eager": 0.0, "compile": 60.0, "aoti": 90.0}
#: (height, width) of the image whose inference size the bundled model is timed at (the bench's).
BUNDLED_IMAGE_HW = (480, 640)


@dataclass(frozen=True)
class ModelPlan:
    """What the step runs: models, input sizes, batches, timing and the dry-run switch."""

    batches: tuple[int, ...] = (1, 32)
    base_preset: str = "base"
    base_hw: tuple[int, int] = (448, 448)
    bundled_hw: tuple[int, int] | None = None  # None: the checkpoint's inference size of 640x480
    warmup: int = 5
    iters: int = 30
    dry_run: bool = False


def build_bundled(plan: ModelPlan) -> tuple[str, torch.nn.Module, tuple[int, int], str]:
    """(name, ImageEncoderGraph on the CPU in fp32, input (H, W), description) of the bundled model."""
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.export.graphs import ImageEncoderGraph
    from zeroseg.preprocess import inference_size

    ckpt = load_checkpoint(bundled_checkpoint(), with_train_state=False)
    patch = ckpt.student_config.patch_size
    hw = plan.bundled_hw or inference_size(*BUNDLED_IMAGE_HW, ckpt.preprocess.test_short_side, patch)
    model = ImageEncoderGraph(ckpt.build_student("cpu"), ckpt.preprocess).eval()
    return "bundled", model, tuple(hw), "bundled ShapeWorld student (zeroseg.bundled)"


def build_preset(plan: ModelPlan) -> tuple[str, torch.nn.Module, tuple[int, int], str]:
    """The same for a seeded random-weight student of `plan.base_preset` (built in memory)."""
    from zeroseg.export.graphs import ImageEncoderGraph
    from zeroseg.model.config import student_preset
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.preprocess import Preprocess

    torch.manual_seed(0)
    cfg = student_preset(plan.base_preset, out_dim=512)  # CLIP ViT-B/16's embedding width
    model = ImageEncoderGraph(ZeroSegStudent(cfg), Preprocess(train_size=cfg.image_size)).eval()
    return plan.base_preset, model, plan.base_hw, f"random-weight `{plan.base_preset}` preset student"


def flops_per_image(model: torch.nn.Module, pixels: torch.Tensor) -> int:
    """FLOPs of one batch-1 call, attention included (SDPA's math kernel: two counted matmuls)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(pixels[:1])
    return int(counter.get_total_flops())


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """TF32 matmuls for "tf32", full fp32 otherwise; torch's setting restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def prepare(engine: str, model: torch.nn.Module, example: torch.Tensor, plan: ModelPlan,
            work: Path, name: str) -> tuple[Callable[[torch.Tensor], Any], str]:  # fmt: skip
    """The callable of one engine and a line describing what it is."""
    if engine == "eager":
        return model, "PyTorch eager"
    if engine == "compile":
        torch._dynamo.reset()
        backend = "eager" if plan.dry_run else "inductor"
        return torch.compile(
            model, dynamic=False, backend=backend
        ), f"torch.compile(dynamic=False, {backend})"
    from torch.export import Dim

    top = max(2, *plan.batches)
    pixels = example[:1].expand(top, *example.shape[1:]).contiguous()
    with torch.no_grad():
        program = torch.export.export(
            model, (pixels,), dynamic_shapes={"pixels": {0: Dim("batch", min=1, max=top)}}
        )
    if plan.dry_run:
        return program.module(), "torch.export only, run as ExportedProgram.module() (dry run: no compile)"
    from zeroseg.export.aoti.compile import compile_package, inductor_options

    path = work / f"{name}.pt2"
    options = inductor_options(False)
    compile_package(program, path, options, dynamic=True, progress=False)
    runner = torch._inductor.aoti_load_package(str(path))
    return runner, f"aoti_compile_and_package on {example.device.type}, batch 1..{top}, options {options}"


def measure(fn: Callable[[torch.Tensor], Any], pixels: torch.Tensor, plan: ModelPlan) -> dict[str, float]:
    """Cold first call (s), then p50 / p90 ms of `plan.iters` synchronised calls after warm-up."""
    from zeroseg.bench.timing import percentile, sample_times, time_once

    with torch.no_grad():
        first_s = time_once(lambda: fn(pixels), pixels.device) / 1e3
        times = sample_times(lambda: fn(pixels), pixels.device, warmup=plan.warmup, iters=plan.iters)
    return {"first_call_s": first_s, "p50_ms": statistics.median(times), "p90_ms": percentile(times, 90)}


def _row(name: str, engine: str, batch: int, hw, status: str, reason: str | None = None, **extra) -> dict:
    return {"model": name, "engine": engine, "batch": batch, "input_hw": list(hw), "status": status,
            "reason": reason, **extra}  # fmt: skip


def _rates(timing: dict[str, float], batch: int, flops: int, peak_tflops: float | None) -> dict[str, Any]:
    images_per_s = batch / (timing["p50_ms"] / 1e3)
    tflops = flops * images_per_s / 1e12
    mfu = tflops / peak_tflops if peak_tflops else None
    return {**timing, "images_per_s": images_per_s, "achieved_tflops": tflops, "mfu": mfu}


def run_engine(engine: str, model_info: tuple, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """Prepare one engine for one model and time it at every batch size; one row per batch."""
    name, model, hw, _ = model_info
    plan, budget, device, dtype = ctx["plan"], ctx["budget"], ctx["device"], ctx["dtype"]
    reserve = 0.0 if plan.dry_run else PREPARE_RESERVE_S[engine]
    if budget.left() <= reserve:
        reason = budget.why_skipped(reserve)
        return [_row(name, engine, b, hw, "skipped", reason) for b in plan.batches]
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(b, 3, *hw, generator=gen).to(device=device, dtype=dtype) for b in plan.batches}
    started = time.perf_counter()
    try:
        fn, detail = prepare(engine, model, inputs[plan.batches[-1]], plan, ctx["work"], name)
    except Exception as exc:  # noqa: BLE001 - one engine's failure is its rows' reason
        return [_row(name, engine, b, hw, "failed", one_line(exc)) for b in plan.batches]
    prepare_s = time.perf_counter() - started
    rows = []
    for b in plan.batches:
        if budget.left() <= 0:
            rows.append(_row(name, engine, b, hw, "skipped", budget.why_skipped(0.0)))
            continue
        try:
            timing = measure(fn, inputs[b], plan)
        except Exception as exc:  # noqa: BLE001
            rows.append(_row(name, engine, b, hw, "failed", one_line(exc), detail=detail))
            continue
        rates = _rates(timing, b, ctx["flops"][name], ctx["peak_tflops"])
        rows.append(_row(name, engine, b, hw, "ok", detail=detail, prepare_s=prepare_s, **rates))
    return rows


def run_models(plan: ModelPlan, device: torch.device, precision: str, peak_tflops: float | None,
               budget, work: Path) -> dict[str, Any]:  # fmt: skip
    """Every model x engine x batch row and the FLOPs per image; the step's result."""
    dtype = DTYPES[precision]
    ctx = {"plan": plan, "budget": budget, "device": device, "dtype": dtype, "work": work,
           "peak_tflops": peak_tflops, "flops": {}}  # fmt: skip
    rows, models = [], {}
    with matmul_precision(precision):
        for what, build in (("bundled", build_bundled), (plan.base_preset, build_preset)):
            try:
                name, model, hw, description = build(plan)
                model = model.to(device=device, dtype=dtype)
                probe = torch.rand(1, 3, *hw).to(device=device, dtype=dtype)
                ctx["flops"][name] = flops_per_image(model, probe)
            except Exception as exc:  # noqa: BLE001 - the other model still runs
                rows.append(_row(what, "all", 0, (), "failed", one_line(exc)))
                continue
            models[name] = {"description": description, "input_hw": list(hw),
                            "flops_per_image": ctx["flops"][name]}  # fmt: skip
            for engine in ENGINES:
                rows += run_engine(engine, (name, model, hw, description), ctx)
            del model
            torch._dynamo.reset()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    failed = [r for r in rows if r["status"] == "failed"]
    reason = None
    if failed:
        first = failed[0]
        reason = (
            f"{len(failed)} of {len(rows)} rows failed; {first['model']} {first['engine']}: {first['reason']}"
        )
    return {"status": "failed" if failed else "ok", "reason": reason, "precision": precision,
            "batches": list(plan.batches), "models": models, "rows": rows}  # fmt: skip


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (at most 300 chars)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
