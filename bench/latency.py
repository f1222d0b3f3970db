"""`zeroseg-bench latency`: per-stage latency of the inference pipeline, bs1 latency, bsN throughput.

What is timed, per batch size B (inputs are B synthetic ShapeWorld scenes held in memory as PIL
images, so no disk I/O happens inside a timed loop):

The stages are `Segmenter`'s own (`zeroseg.infer.base`), called one by one:

* preprocess: `Segmenter.preprocess`: PIL -> [0,1] tensor, bicubic antialiased resize to the network
  size, stack, copy to the device;
* forward: `Segmenter.forward` on that batch (mean/std normalisation, encoder + grouping head ->
  unit-norm segment tokens and one-hot assignment maps): the seam an exported engine replaces;
* head: `Segmenter.head` (`zeroseg.kernels.segment_head` per image through the requested backend:
  similarity, softmax, background threshold, bilinear upsampling to the source image size, argmax,
  labels copied to host numpy);
* full: `Segmenter(images, classes)` end to end with the vocabulary already cached.

The text side is timed apart, once per run: `text_cold` is the first encoding of the vocabulary in a
fresh `Vocabulary` (one sample, nothing discarded), `text_encode` re-encodes it without the cache,
`text_cached` is a cache hit (what every later call pays).

Each stage runs `warmup` discarded calls then `iters` timed ones; the whole series of stages is
repeated `repeat` times; the device is synchronised around every timed call (`zeroseg.bench.timing`).
Throughput is B / mean full-pipeline time, per repeat, so its sd is the repeat-to-repeat spread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zeroseg.bench.common import (
    SCHEMA_VERSION,
    check_image_budget,
    check_non_negative,
    check_positive,
    file_info,
    scene_images,
)
from zeroseg.bench.env import collect_env, mark_end
from zeroseg.bench.timing import describe, rate, sample_times, time_once
from zeroseg.errors import ZerosegError
from zeroseg.utils.device import resolve_device

if TYPE_CHECKING:
    from PIL import Image

    from zeroseg.infer.labels import LabelSpace
    from zeroseg.infer.segmenter import Segmenter

STAGES: tuple[str, ...] = ("preprocess", "forward", "head", "full")
STAGE_DOC: dict[str, str] = {
    "preprocess": "Segmenter.preprocess: PIL -> [0,1] tensor, bicubic antialiased resize to the network "
    "size, stack, copy to the device, for the whole batch",
    "forward": "Segmenter.forward: normalisation + student -> segment tokens + one-hot assignment maps",
    "head": "Segmenter.head: zeroseg.kernels.segment_head per image, labels at the source size, to numpy",
    "full": "Segmenter(images, classes) end to end, vocabulary cached, labels copied to host numpy",
    "text_cold": "first encoding of the vocabulary (fresh cache, one sample, nothing discarded)",
    "text_encode": "re-encoding the vocabulary without the cache (prompt templates x synonyms)",
    "text_cached": "a vocabulary cache hit (what every call after the first pays)",
}
TIMING_DOC = (
    "wall clock (time.perf_counter) per call; device synchronised before the first and after every timed "
    "call; warm-up calls discarded; ms per call of a whole batch"
)
#: Default vocabulary: ShapeWorld's colour classes (the bundled model's label set).
DEFAULT_CLASSES = "background,red,green,blue,yellow,magenta,cyan"
#: A VGA camera frame (height, width): the source images are resized to the network's short side.
DEFAULT_IMAGE_SIZE = (480, 640)


@dataclass(frozen=True)
class LatencySettings:
    """One latency run. image_size is the source images' (height, width)."""

    checkpoint: Path
    device: str = "cpu"
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 5
    iters: int = 30
    repeat: int = 3
    text_iters: int = 10
    backend: str = "auto"
    short_side: int | None = None
    classes: str = DEFAULT_CLASSES
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    seed: int = 0

    def validate(self) -> LatencySettings:
        """One-line errors for out-of-range values (checked before anything is loaded)."""
        from zeroseg.kernels.dispatch import BACKEND_CHOICES

        if not self.batches:
            raise ZerosegError("--batch needs at least one batch size, e.g. 1,8")
        for b in self.batches:
            check_positive(b, "--batch")
        check_non_negative(self.warmup, "--warmup")
        check_positive(self.iters, "--iters")
        check_positive(self.repeat, "--repeat")
        check_positive(self.text_iters, "--text-iters")
        if self.short_side is not None:
            check_positive(self.short_side, "--short-side")
        if self.backend not in BACKEND_CHOICES:
            raise ZerosegError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {self.backend!r}")
        if min(self.image_size) <= 0:
            raise ZerosegError(f"--image-size must be positive, got {self.image_size}")
        check_image_budget(self.image_size, max(self.batches))
        return self


def _sample_repeats(
    calls: dict[str, Callable[[], object]], device: torch.device, s: LatencySettings
) -> dict[str, list[list[float]]]:
    """Per call, one list of samples per repeat; each repeat runs every call's series in turn (so the
    repeat-to-repeat spread also shows drift: clocks, thermals, other load)."""
    samples: dict[str, list[list[float]]] = {name: [] for name in calls}
    for _ in range(s.repeat):
        for name, fn in calls.items():
            samples[name].append(sample_times(fn, device, warmup=s.warmup, iters=s.iters))
    return samples


def model_info(segmenter) -> dict[str, Any]:
    """Architecture facts of the benchmarked student."""
    cfg = segmenter.checkpoint.student_config
    return {
        "parameters": sum(p.numel() for p in segmenter.model.parameters()),
        "patch_size": cfg.patch_size,
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "segments": cfg.num_segments,
        "out_dim": cfg.out_dim,
        "templates": len(segmenter.vocabulary.templates),
        "teacher": segmenter.checkpoint.config.teacher.get("spec")
        or segmenter.checkpoint.config.teacher.get("name"),
    }


@torch.no_grad()
def run_latency(settings: LatencySettings, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the pipeline as `settings` says; returns the JSON-able result (see the module docstring)."""
    from zeroseg.classes import parse_labels_option
    from zeroseg.infer.segmenter import Segmenter
    from zeroseg.kernels import resolve_backend

    s = settings.validate()
    device = resolve_device(s.device)
    backend = resolve_backend(s.backend, device)
    seg = Segmenter.from_checkpoint(s.checkpoint, device=device, short_side=s.short_side, backend=s.backend)
    classes = parse_labels_option(s.classes, None)
    space = seg.label_space(classes)
    prompts = [list(p) for p in space.prompts]
    height, width = s.image_size
    net_size = seg.input_size(height, width)
    images = scene_images(max(s.batches), s.image_size, s.seed)
    env = collect_env(device)
    log(
        f"latency: {Path(s.checkpoint).name} on {env['device_name']} ({device}), head backend {backend}, "
        f"{env['cpu']['torch_threads']} threads; {width}x{height} ShapeWorld scenes -> network "
        f"{net_size[1]}x{net_size[0]}; {len(space.names) - 1} classes x "
        f"{len(seg.vocabulary.templates)} templates"
    )

    text, text_result = _time_text(seg, prompts, space, device, s)
    batches = [
        _time_batch(seg, images[:b], classes, space, text, net_size, device, s, log=log) for b in s.batches
    ]
    return {
        "schema": f"zeroseg-bench/latency/v{SCHEMA_VERSION}",
        "command": "latency",
        "env": mark_end(env),
        "settings": {
            **{k: v for k, v in asdict(s).items() if k not in ("checkpoint", "image_size")},
            "batches": list(s.batches),
            "checkpoint": file_info(Path(s.checkpoint)),
            "backend_resolved": backend,
            "image_size_hw": [height, width],
            "network_input_hw": list(net_size),
            "short_side": seg.short_side,
            "bg_thresh": seg.default_bg_thresh,
            "inputs": "ShapeWorld scenes (zeroseg.data.scenes.generate_scene), in memory as PIL RGB",
            "timing": TIMING_DOC,
            "stages": STAGE_DOC,
        },
        "model": model_info(seg),
        "text": text_result,
        "batches": batches,
        "summary": summarize(batches),
    }


def _time_text(
    seg: Segmenter, prompts: list[list[str]], space: LabelSpace, device: torch.device, s: LatencySettings
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Time the text side: the cold first encoding (before anything else has warmed the text
    tower), a re-encoding without the cache and a cache hit.

    Returns:
        The vocabulary's embeddings on `device` (for the head) and the text part of the result.
    """
    from zeroseg.text import encode_classes

    text_cold = time_once(lambda: seg.vocabulary(prompts), device)
    encoder, templates = seg.vocabulary.encoder, seg.vocabulary.templates
    text_encode = sample_times(
        lambda: encode_classes(encoder, prompts, templates), device, warmup=1, iters=s.text_iters
    )
    text_cached = _sample_repeats({"cached": lambda: seg.vocabulary(prompts)}, device, s)["cached"]
    text = seg.vocabulary(prompts).to(device)
    return text, {
        "classes": list(space.names),
        "prompts": sum(len(p) for p in prompts) * len(templates),
        "cold_ms": text_cold,
        "encode": describe([text_encode]),
        "cached": describe(text_cached),
    }


def _time_batch(
    seg: Segmenter,
    batch_images: list[Image.Image],
    classes: list[list[str]],
    space: LabelSpace,
    text: torch.Tensor,
    net_size: tuple[int, int],
    device: torch.device,
    s: LatencySettings,
    *,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Time each stage and the full pipeline on one batch of images; log and return its row."""
    b = len(batch_images)
    thresh = seg.default_bg_thresh
    sizes = [(im.height, im.width) for im in batch_images]
    x = seg.preprocess(batch_images, net_size)
    out = seg.forward(x)
    calls = {
        "preprocess": lambda: seg.preprocess(batch_images, net_size),
        "forward": lambda: seg.forward(x),
        "head": lambda: seg.head(out, text, sizes, bg_thresh=thresh, space=space),
        "full": lambda: seg(batch_images, classes, batch_size=b),
    }
    samples = _sample_repeats(calls, device, s)
    stages = {name: describe(samples[name]) for name in STAGES}
    row = {
        "batch": b,
        "stages": stages,
        "images_per_s": rate(b, samples["full"]),
        "full_ms_per_image": stages["full"]["mean_ms"] / b,
        "sum_of_stages_ms": sum(stages[n]["mean_ms"] for n in ("preprocess", "forward", "head")),
    }
    full = stages["full"]
    log(
        f"  batch {b}: full {full['mean_ms']:.2f} ms (p50 {full['p50_ms']:.2f}, "
        f"p99 {full['p99_ms']:.2f}), "
        f"{row['images_per_s']['mean']:.1f} images/s"
    )
    return row


def summarize(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """bs1 latency (from the batch-1 run, when there is one) and the best batch's throughput."""
    out: dict[str, Any] = {"bs1_latency_ms": None}
    one = next((b for b in batches if b["batch"] == 1), None)
    if one is not None:
        full = one["stages"]["full"]
        out["bs1_latency_ms"] = {k: full[f"{k}_ms"] for k in ("mean", "p50", "p90", "p95", "p99")}
    best = max(batches, key=lambda b: b["images_per_s"]["mean"])
    out["throughput"] = {
        "batch": best["batch"],
        "images_per_s": best["images_per_s"]["mean"],
        "sd": best["images_per_s"]["sd"],
    }
    return out


def report_lines(result: dict[str, Any]) -> list[str]:
    """The human-readable table of a latency result."""
    from zeroseg.bench.common import table

    headers = ["stage", "batch", "mean ms", "sd", "p50", "p90", "p95", "p99", "min", "max", "rep cv %"]
    rows = []
    text = result["text"]
    rows.append(["text cold (once)", "-", text["cold_ms"], None, None, None, None, None, None, None, None])
    for name, st in (("text encode", text["encode"]), ("text cached", text["cached"])):
        rows.append([name, "-", *_stat_cells(st)])
    for b in result["batches"]:
        for name in STAGES:
            rows.append([name, b["batch"], *_stat_cells(b["stages"][name])])
    lines = [table(headers, rows)]
    summary = result["summary"]
    if summary["bs1_latency_ms"]:
        bs1 = summary["bs1_latency_ms"]
        lines.append(f"bs1 latency: {bs1['mean']:.2f} ms mean, {bs1['p50']:.2f} p50, {bs1['p99']:.2f} p99")
    for b in result["batches"]:
        ips = b["images_per_s"]
        lines.append(f"batch {b['batch']}: {ips['mean']:.2f} ± {ips['sd']:.2f} images/s over the repeats")
    return lines


def _stat_cells(st: dict[str, Any]) -> list[Any]:
    keys = ("mean", "sd", "p50", "p90", "p95", "p99", "min", "max")
    return [*(st[f"{k}_ms"] for k in keys), 100.0 * st["repeat_cv"]]
