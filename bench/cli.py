"""`zeroseg-bench`: every backend side by side; latency, training and cache throughput, kernels, environment.

    zeroseg-bench              # the bundled model on every backend here -> bench-results/compare.{json,png}
    zeroseg-bench ckpt.pt --backends torch,onnxruntime,onnxruntime-int8 --batch-sizes 1,4,16
    zeroseg-bench bundle/ --iters 50           # an exported bundle (ONNX, AOTInductor or TensorRT)
    zeroseg-bench latency ckpt.pt --device cuda --batch 1,8,32 --iters 200 --json out.json
    zeroseg-bench train --preset base --batch-size 64
    zeroseg-bench cache --teacher ViT-B-16:/path/to/open_clip.bin --images 256
    zeroseg-bench head --device cpu --quick       # zeroseg.bench.head_bench's own options
    zeroseg-bench gpu --out gpu-check            # one-call GPU check (--dry-run: on the CPU)
    zeroseg-bench edge                           # ExecuTorch C++ runner vs Python, deployed size
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
    "Benchmarks of ZeroSeg. `zeroseg-bench [CKPT|BUNDLE] [options]` (the `compare` command) runs every "
    "backend side by side: latency per stage, throughput, speed-up over torch eager, memory, pixel "
    "agreement and mIoU, into bench-results/compare.json and .png. Other commands: latency, train, "
    "cache, head, env."
)

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


@app.command("compare")
def compare(
    source: Path | None = typer.Argument(
        None, help="Checkpoint, `bundled`, or an exported bundle folder (default: the bundled model)."
    ),
    backends: str | None = typer.Option(
        None,
        "--backends",
        help="Comma list of torch, compile, onnxruntime, onnxruntime-int8, openvino, "
        "aoti, executorch, executorch-int8, tensorrt, maskclip, clearclip, sclip, naclip (default: every "
        "one that can run here except clearclip, sclip and naclip; the others listed with the reason).",
    ),
    batch_sizes: str = typer.Option(
        "1,2", "--batch-sizes", help="Batch sizes, e.g. 1,4,16 (default 1,2: memory, see Benchmarks)."
    ),
    short_side: int | None = typer.Option(None, "--short-side", help="Network short side (default: ckpt's)."),
    image_size: str = typer.Option("640x480", "--image-size", help="Source images, WIDTHxHEIGHT."),
    classes: str | None = typer.Option(
        None, "--classes", help='Vocabulary "cat,dog,sofa|couch" (default: the ShapeWorld colours).'
    ),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Discarded calls before each timed series."),
    iters: int = typer.Option(6, "--iters", help="Timed calls per series."),
    repeat: int = typer.Option(3, "--repeat", help="Interleaved repeats (their spread is reported)."),
    threads: int = typer.Option(0, "--threads", min=0, help="Threads of every backend (0: the usable CPUs)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N."),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="VOC-layout folder for mIoU (default: a generated ShapeWorld val split)."
    ),
    dataset_images: int = typer.Option(50, "--dataset-images", help="Images of the dataset to score."),
    int8: str = typer.Option("static", "--int8", help="ONNX bundle's int8 mode: static (default) | dynamic."),
    teacher: str | None = typer.Option(None, "--teacher", help="CLIP for the baseline rows (MODEL:/path)."),
    onnx_bundle: Path | None = typer.Option(None, "--onnx-bundle", help="Use this ONNX bundle (no export)."),
    aoti_bundle: Path | None = typer.Option(None, "--aoti-bundle", help="Use this AOTInductor bundle."),
    trt_bundle: Path | None = typer.Option(None, "--trt-bundle", help="Use this TensorRT engine folder."),
    executorch_bundle: Path | None = typer.Option(
        None,
        "--executorch-bundle",
        help="Use this ExecuTorch bundle (exported with --int8 for its int8 row).",
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Instead of a checkpoint: a random-weight student of this preset (e.g. base)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated timing scenes."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("compare")),
    plot_path: Path | None = typer.Option(
        None, "--plot", help="PNG plot (default bench-results/compare.png; -scatter.png beside it)."
    ),
) -> None:
    """Every backend side by side: stage latency, images/s, speed-up over torch, memory, agreement, mIoU."""
    from zeroseg.bench.compare.backends import parse_backends
    from zeroseg.bench.compare.report import plot, plot_scatter, scatter_path, table_lines
    from zeroseg.bench.compare.run import DEFAULT_CLASSES, CompareSettings, run_compare

    pairs = (
        ("onnx", onnx_bundle),
        ("aoti", aoti_bundle),
        ("trt", trt_bundle),
        ("executorch", executorch_bundle),
    )
    given = {k: v for k, v in pairs if v}
    settings = CompareSettings(
        source=source, backends=parse_backends(backends),
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"), short_side=short_side,
        image_size=parse_size(image_size, "--image-size"),
        classes=classes if classes is not None else DEFAULT_CLASSES, warmup=warmup, iters=iters,
        repeat=repeat, threads=threads, device=device, dataset=dataset, dataset_images=dataset_images,
        int8=int8.strip().lower(), teacher=teacher, bundles=given, preset=preset, seed=seed,
    ).validate()  # fmt: skip
    result = run_compare(settings, log=typer.echo)
    picture = plot(result, plot_path if plot_path is not None else json_path(None, "compare.png"))
    scatter = plot_scatter(result, scatter_path(picture))
    lines = [*table_lines(result), f"wrote {picture}", f"wrote {scatter}"]
    _emit(result, json_path(out, "compare.json"), lines)


@app.command("latency")
def latency(
    checkpoint: Path | None = typer.Argument(None, help="ZeroSeg checkpoint (default: the bundled one)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | auto."),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes, e.g. 1,8 (bs1 latency, bsN throughput)."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Discarded calls before each timed series."),
    iters: int = typer.Option(30, "--iters", help="Timed calls per stage and repeat."),
    repeat: int = typer.Option(3, "--repeat", help="Repeats of each series (repeat-to-repeat variance)."),
    text_iters: int = typer.Option(10, "--text-iters", help="Timed uncached vocabulary encodings."),
    backend: str = typer.Option("auto", "--backend", help="Head: auto | vectorized | torch | triton."),
    short_side: int | None = typer.Option(None, "--short-side", help="Network short side (default: ckpt's)."),
    classes: str | None = typer.Option(
        None, "--classes", help='Vocabulary "cat,dog,sofa|couch" (default: ShapeWorld colours).'
    ),
    image_size: str = typer.Option("640x480", "--image-size", help="Source images, WIDTHxHEIGHT."),
    threads: int = typer.Option(0, "--threads", min=0, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated scenes."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("latency")),
) -> None:
    """Per-stage latency (preprocess, forward, head, text, full pipeline), bs1 latency and bsN throughput."""
    from zeroseg import bundled
    from zeroseg.bench.latency import DEFAULT_CLASSES, LatencySettings

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
    warmup_steps: int = typer.Option(3, "--warmup-steps", min=0, help="Discarded steps before timing."),
    image_size: int | None = typer.Option(None, "--image-size", help="Training crop (default: preset's)."),
    embed_dim: int | None = typer.Option(None, "--embed-dim", help="Teacher width (default: the preset's)."),
    grids: str = typer.Option("1,2,3,4", "--grids", help="Teacher grid views (30 for 1,2,3,4)."),
    match: str = typer.Option("paper", "--match", help="Segment matching: paper | two-way."),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16 on CUDA) | bf16 | fp16 | off."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(0, "--threads", min=0, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", min=0),
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
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader workers (0: decode in-process)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    threads: int = typer.Option(0, "--threads", min=0, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", min=0),
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


@app.command("gpu")
def gpu(
    out: Path = typer.Option(..., "--out", help="Folder for gpu.json and gpu.md (nothing else is written)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Every step's set-up on the CPU at tiny sizes (no GPU figure)."
    ),
    budget_s: float = typer.Option(
        420.0, "--budget-s", min=1, help="Global time budget, seconds; what does not fit is skipped."
    ),
    steps: str = typer.Option("kernels,head,models", "--steps", help="Comma list of kernels, head, models."),
    precision: str = typer.Option("bf16", "--precision", help="Models and head: bf16 | fp16 | tf32 | fp32."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Discarded calls before each timed series."),
    iters: int = typer.Option(30, "--iters", help="Timed calls per model series (the head: at least 50)."),
) -> None:
    """One-call GPU check: Triton kernel tests compiled, fused head vs reference, eager/compile/AOTI."""
    from zeroseg.bench.gpu import GpuSettings, run_gpu_check
    from zeroseg.bench.gpu.report import markdown

    names = tuple(s.strip().lower() for s in steps.split(",") if s.strip())
    settings = GpuSettings(out=out, dry_run=dry_run, budget_s=budget_s, steps=names,
                           precision=precision.strip().lower(), warmup=warmup, iters=iters)  # fmt: skip
    result = run_gpu_check(settings, log=typer.echo)
    typer.echo(markdown(result))
    typer.echo(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'}")
    failed = [f"{k} ({v['reason']})" for k, v in result["steps"].items() if v["status"] == "failed"]
    if failed:
        raise ZerosegError(f"step failed: {'; '.join(failed)}; see {out / 'gpu.json'}")


@app.command("edge")
def edge(
    source: Path | None = typer.Argument(None, help="Checkpoint or ExecuTorch bundle (default: bundled)."),
    image_size: str = typer.Option("640x480", "--image-size", help="The scene, WIDTHxHEIGHT."),
    iters: int = typer.Option(20, "--iters", help="Timed runs per repeat (after one warm-up)."),
    repeat: int = typer.Option(3, "--repeat", help="Interleaved repeats (C++, Python) per precision."),
    threads: int = typer.Option(2, "--threads", help="ExecuTorch threadpool size, both sides."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("edge")),
) -> None:
    """The ExecuTorch C++ runner beside its Python runtime on one image, and its deployed size."""
    from zeroseg.bench.edge import EdgeSettings, report_lines, run_edge

    settings = EdgeSettings(source=source, image_size=parse_size(image_size, "--image-size"), iters=iters,
                            repeat=repeat, threads=threads)  # fmt: skip
    result = run_edge(settings, log=typer.echo)
    _emit(result, json_path(out, "edge"), report_lines(result))


@app.command("frontier")
def frontier(
    spec: Path = typer.Argument(..., help="The settings to time: the JSON the ShapeWorld proof writes."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("frontier")),
) -> None:
    """Time every setting of the ShapeWorld frontier at batch 1, interleaved, on its fastest gated engine."""
    import json

    from zeroseg.bench.frontier import run_frontier

    try:
        data = json.loads(spec.read_text())
    except (OSError, ValueError) as err:
        raise ZerosegError(f"cannot read the frontier spec {spec} ({err}): write it with "
                           f"python -m zeroseg.shapeworld.proof --frontier") from None  # fmt: skip
    _emit(run_frontier(data, log=typer.echo), json_path(out, "frontier"))


@app.command("env")
def env(out: Path | None = typer.Option(None, "--json", help="Also write the environment here.")) -> None:
    """Versions, CPU, GPU and compute capability, and which deployment runtimes are available."""
    from zeroseg.bench.env import collect_env

    info = collect_env(runtimes=True)
    typer.echo(format_env(info))
    if out is not None:
        write_result(out, {"schema": "zeroseg-bench/env/v1", "command": "env", "env": info})
        typer.echo(f"wrote {out}")


@app.command("serve")
def serve_load(
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="Checkpoint (default: bundled)."),
    engine: Path | None = typer.Option(None, "--engine", help="An exported ONNX bundle instead."),
    url: str | None = typer.Option(None, "--url", help="Target a running zeroseg serve (http://HOST:PORT)."),
    ray: str = typer.Option("local", "--ray", help="Ray for the server it starts: local|auto|ADDRESS."),
    port: int = typer.Option(8000, "--port", help="Port of the server the bench starts (127.0.0.1)."),
    replicas: int = typer.Option(2, "--replicas", help="Replicas of the server the bench starts."),
    max_batch: int = typer.Option(8, "--max-batch", help="Its @serve.batch max_batch_size."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", help="Its batch_wait_timeout_s, in ms."),
    clients: int = typer.Option(4, "--clients", help="Concurrent client threads (at most 16)."),
    seconds: float = typer.Option(10.0, "--seconds", help="Length of the run (at most 120 s)."),
    images: int = typer.Option(8, "--images", help="Distinct inputs (expected labels precomputed)."),
    image_size: str = typer.Option("128x96", "--image-size", help="Inputs, WIDTHxHEIGHT."),
    labels: str = typer.Option("red,green,blue,yellow", "--labels", help="Classes of every good request."),
    kill_replica: bool = typer.Option(False, "--kill-replica", help="Kill one replica halfway (ray.kill)."),
    malformed_every: int = typer.Option(
        5, "--malformed-every", min=0, help="Every Nth request malformed (0: off)."
    ),
    retries: int = typer.Option(
        8, "--retries", min=0, help="Retries of a 5xx or connection error per request."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the generated inputs."),
    out: Path | None = typer.Option(None, "--json", help=JSON_HELP.format("serve")),
) -> None:
    """Load and faults against zeroseg serve: req/s, p50/p99, batch sizes; no request lost or wrong."""
    from zeroseg.bench.serve_load import ServeLoadSettings, report_lines, run_serve_load

    settings = ServeLoadSettings(
        checkpoint=None if engine is not None else (checkpoint or "bundled"),
        engine=str(engine) if engine is not None else None, url=url, ray=ray, port=port, replicas=replicas,
        max_batch=max_batch, batch_wait_ms=batch_wait_ms, clients=clients, seconds=seconds, images=images,
        image_size=parse_size(image_size, "--image-size"), labels=labels, kill_replica=kill_replica,
        malformed_every=malformed_every, retries=retries, seed=seed,
    ).validate()  # fmt: skip
    result = run_serve_load(settings, log=typer.echo)
    _emit(result, json_path(out, "serve.json"), report_lines(result))
    if result["errors"]:
        raise ZerosegError(
            f"{result['lost']} requests lost, {result['wrong']} answered wrongly, "
            f"{result['malformed_not_refused']} malformed not refused; see {json_path(out, 'serve.json')}"
        )


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


#: `zeroseg-bench` with no command name first runs `compare` (`zeroseg-bench ckpt.pt --iters 20`).
DEFAULT_COMMAND = "compare"
_NOT_COMMANDS = ("--help", "-h", "--install-completion", "--show-completion")


def main() -> None:
    """Console entry point: `zeroseg-bench [CKPT|BUNDLE] [options]` is `zeroseg-bench compare ...`."""
    import sys

    names = {c.name for c in app.registered_commands}
    args = sys.argv[1:]
    if not args or (args[0] not in names and args[0] not in _NOT_COMMANDS):
        sys.argv[1:1] = [DEFAULT_COMMAND]
    run_app(app)
