"""`zeroseg-bench`: latency, training and teacher-cache throughput, the kernel benchmark, the environment.

    zeroseg-bench              # bundled ShapeWorld model, CPU latency -> bench-results/latency.json
    zeroseg-bench latency ckpt.pt --device cuda --batch 1,8,32 --iters 200 --json out.json
    zeroseg-bench train --preset base --batch-size 64
    zeroseg-bench cache --teacher ViT-B-16:/path/to/open_clip.bin --images 256
    zeroseg-bench head --device cpu --quick       # zeroseg.bench.head_bench's own options
    zeroseg-bench env

Every command prints a table and writes a JSON result (atomically) with an environment block;
bad arguments are one-line errors with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.bench.common import json_path, parse_size, set_threads, write_result
from zeroseg.errors import ZerosegError
from zeroseg.utils.console import new_app, parse_int_list, run_app

app = new_app(
    "Benchmarks of ZeroSeg: per-stage latency, training and teacher-cache throughput, kernels, environment. "
    "With no command: the bundled ShapeWorld model's latency on CPU, written to bench-results/latency.json."
)

#: What `zeroseg-bench` with no command runs (besides the bundled checkpoint and the CPU): modest
#: settings that finish in well under a minute on 2 cores.
MAIN_JOB: dict[str, object] = {"batches": (1, 4), "warmup": 2, "iters": 10, "repeat": 3, "text_iters": 5}

JSON_HELP = "Result file (default bench-results/{}.json)."
THREADS_HELP = "torch intra-op threads (0: torch's default)."


def _emit(result: dict, path: Path, lines: list[str] | None = None) -> None:
    from zeroseg.bench.env import busy_warning

    for line in lines or []:
        typer.echo(line)
    warning = busy_warning(result["env"])
    if warning:
        typer.echo(f"warning: {warning}")
    write_result(path, result)
    typer.echo(f"wrote {path}")


def _latency(settings, out: Path) -> dict:
    from zeroseg.bench.latency import report_lines, run_latency

    result = run_latency(settings, log=typer.echo)
    _emit(result, out, report_lines(result))
    return result


@app.callback(invoke_without_command=True, no_args_is_help=False)
def main_job(ctx: typer.Context) -> None:
    """With no command: latency of the bundled ShapeWorld checkpoint on CPU (bench-results/latency.json)."""
    if ctx.invoked_subcommand is not None:
        return
    from zeroseg.bench.latency import LatencySettings
    from zeroseg.shapeworld import bundled

    settings = LatencySettings(checkpoint=bundled.bundled_checkpoint(), device="cpu", **MAIN_JOB)
    _latency(settings, json_path(None, "latency.json"))


@app.command("latency")
def latency(
    checkpoint: Path | None = typer.Argument(None, help="ZeroSeg checkpoint (default: the bundled one)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | auto."),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes, e.g. 1,8 (bs1 latency, bsN throughput)."),
    warmup: int = typer.Option(5, "--warmup", help="Discarded calls before each timed series."),
    iters: int = typer.Option(30, "--iters", help="Timed calls per stage and repeat."),
    repeat: int = typer.Option(3, "--repeat", help="Repeats of each series (repeat-to-repeat variance)."),
    text_iters: int = typer.Option(10, "--text-iters", help="Timed uncached vocabulary encodings."),
    backend: str = typer.Option("auto", "--backend", help="Head backend: auto | torch | triton."),
    short_side: int | None = typer.Option(None, "--short-side", help="Network short side (default: ckpt's)."),
    classes: str | None = typer.Option(
        None, "--classes", help='Vocabulary "cat,dog,sofa|couch" (default: ShapeWorld colours).'
    ),
    image_size: str = typer.Option("640x480", "--image-size", help="Source images, WIDTHxHEIGHT."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated scenes."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("latency")),
) -> None:
    """Per-stage latency (preprocess, forward, head, text, full pipeline), bs1 latency and bsN throughput."""
    from zeroseg.bench.latency import DEFAULT_CLASSES, LatencySettings
    from zeroseg.shapeworld import bundled

    set_threads(threads)
    settings = LatencySettings(
        checkpoint=checkpoint if checkpoint is not None else bundled.bundled_checkpoint(),
        device=device, batches=parse_int_list(batch, "--batch"), warmup=warmup, iters=iters, repeat=repeat,
        text_iters=text_iters, backend=backend.strip().lower(), short_side=short_side,
        classes=classes if classes is not None else DEFAULT_CLASSES,
        image_size=parse_size(image_size, "--image-size"), seed=seed,
    )  # fmt: skip
    _latency(settings.validate(), json_path(out, "latency.json"))


@app.command("train")
def train(
    preset: str = typer.Option("tiny", "--preset", help="Student preset: tiny | base."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per step."),
    steps: int = typer.Option(20, "--steps", help="Timed steps."),
    warmup_steps: int = typer.Option(3, "--warmup-steps", help="Discarded steps before timing."),
    image_size: int | None = typer.Option(None, "--image-size", help="Training crop (default: preset's)."),
    embed_dim: int | None = typer.Option(None, "--embed-dim", help="Teacher width (default: the preset's)."),
    grids: str = typer.Option("1,2,3,4", "--grids", help="Teacher grid views (30 for 1,2,3,4)."),
    match: str = typer.Option("paper", "--match", help="Segment matching: paper | two-way."),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16 on CUDA) | bf16 | fp16 | off."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("train")),
) -> None:
    """Training throughput (images/s) and peak memory of the student, on synthetic teacher targets."""
    from zeroseg.bench.common import table
    from zeroseg.bench.throughput import TrainBenchSettings, run_train_bench

    set_threads(threads)
    settings = TrainBenchSettings(
        preset=preset, batch_size=batch_size, steps=steps, warmup_steps=warmup_steps, image_size=image_size,
        embed_dim=embed_dim, grids=parse_int_list(grids, "--grids"), match=match, amp=amp, device=device,
        seed=seed,
    )  # fmt: skip
    result = run_train_bench(settings, log=typer.echo)
    st, mem = result["step"], result["memory"]
    rows = [[f"step (batch {batch_size})", *(st[f"{k}_ms"] for k in ("mean", "sd", "p50", "p90", "max"))]]
    lines = [table(["what", "mean ms", "sd", "p50", "p90", "max"], rows)]
    lines.append(f"throughput: {result['images_per_s']:.2f} images/s (student; synthetic teacher targets)")
    lines.append(
        f"peak memory ({mem['kind']}): +{mem['peak_increase_bytes'] / 2**20:.1f} MiB over "
        f"{mem['before_bytes'] / 2**20:.1f} MiB before the steps (peak {mem['peak_bytes'] / 2**20:.1f} MiB)"
    )
    _emit(result, json_path(out, "train.json"), lines)


@app.command("cache")
def cache(
    teacher: str | None = typer.Option(
        None, "--teacher", help="MODEL:TAG, MODEL:/path or a teacher file (default: the bundled one)."
    ),
    images: int = typer.Option(64, "--images", help="Generated ShapeWorld scenes to cache."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch (x views per forward)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Crop side (default: teacher input)."),
    grids: str = typer.Option("1,2,3,4", "--grids", help="Grid sizes (30 views for 1,2,3,4)."),
    dtype: str = typer.Option("float16", "--dtype", help="Cache storage dtype: float16 | float32."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers (0: decode in-process)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(0, "--threads", help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("cache")),
) -> None:
    """Teacher-cache throughput (images/s and views/s) of build_cache on generated scenes."""
    from zeroseg.bench.throughput import CacheBenchSettings, run_cache_bench

    set_threads(threads)
    settings = CacheBenchSettings(
        teacher=teacher, images=images, batch_size=batch_size, image_size=image_size,
        grids=parse_int_list(grids, "--grids"), dtype=dtype, workers=workers, device=device, seed=seed,
    )  # fmt: skip
    result = run_cache_bench(settings, log=typer.echo)
    lines = [
        f"teacher cache: {result['images_per_s']:.2f} images/s, {result['views_per_s']:.1f} views/s "
        f"({result['images']} images in {result['seconds']:.2f} s)"
    ]
    _emit(result, json_path(out, "cache.json"), lines)


@app.command(
    "head",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def head(ctx: typer.Context) -> None:
    """The head kernel benchmark (zeroseg.bench.head_bench): its own options, see `head --help`."""
    from zeroseg.bench import head_bench

    args = list(ctx.args)
    if not any(a == "--out" or a.startswith("--out=") for a in args) and not {"-h", "--help"} & set(args):
        args += ["--out", str(json_path(None, "head.json"))]
    try:
        head_bench.main(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # head_bench's own refusal (e.g. no CUDA device)
            raise ZerosegError(exc.code) from None
        raise


@app.command("env")
def env(out: Path | None = typer.Option(None, "--json", help="Also write the environment here.")) -> None:
    """Versions, CPU, GPU and compute capability, and which deployment runtimes are available."""
    from zeroseg.bench.env import collect_env

    info = collect_env(runtimes=True)
    typer.echo(format_env(info))
    if out is not None:
        write_result(out, {"schema": "zeroseg-bench/env/v1", "command": "env", "env": info})
        typer.echo(f"wrote {out}")


def format_env(info: dict) -> str:
    """The environment as aligned "key: value" lines."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v and k != "torch_runtime")
    cpu, cuda, rt = info["cpu"], info["cuda"], info.get("runtimes", {})
    lines = [
        ("versions", versions),
        ("python", f"{info['python']} on {info['platform']}"),
        ("cpu", f"{cpu['model']} ({cpu['usable_cpus']} usable of {cpu['logical_cpus']}), torch threads "
         f"{cpu['torch_threads']}, load {cpu['load_average_1_5_15']}"),
    ]  # fmt: skip
    if cuda.get("available"):
        smi = cuda.get("nvidia_smi") or {}
        gpu = f"{cuda['name']} (sm {cuda['capability']}, {cuda['total_memory_bytes'] / 2**30:.1f} GiB"
        gpu += f", driver {smi['driver_version']})" if smi else ")"
        gpu += f" x{cuda['device_count']}, CUDA {cuda['torch_cuda']}, cuDNN {cuda['cudnn']}"
        lines.append(("gpu", gpu))
    else:
        lines.append(("gpu", f"none visible (torch CUDA build: {cuda['torch_cuda']})"))
    if rt:
        trt = rt["tensorrt"]
        lines.append(
            ("tensorrt", f"python package {'yes ' + str(trt['version']) if trt['python_package'] else 'no'}; "
             f"trtexec {trt['trtexec'] or 'not found'}")
        )  # fmt: skip
        ort = rt["onnxruntime"]
        providers = ", ".join(ort["providers"]) or "none"
        lines.append(("onnxruntime", f"{ort['version'] or 'not installed'}; providers {providers}"))
        lines.append(("triton", "importable" if rt["triton"]["importable"] else "not installed"))
    if info["env_vars"]:
        lines.append(("env", " ".join(f"{k}={v}" for k, v in info["env_vars"].items())))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def main() -> None:
    """Console entry point."""
    run_app(app)
