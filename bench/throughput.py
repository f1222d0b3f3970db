"""`zeroseg-bench train` and `zeroseg-bench cache`: training and teacher-cache throughput.

train: the **student's** cost per training step — forward with MAE masking, the three losses,
backward, gradient clipping and AdamW, as `zeroseg.train.loop` runs it — on a fixed batch of ShapeWorld
scenes with synthetic teacher targets of the right shape (unit-norm random (B, V, E) features). The
teacher (live encoding or cache reads) and data loading are deliberately left out: `cache` measures
the teacher side. Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the steps, minus what
was allocated before them (model, inputs, targets); on CPU the process's peak resident set size
(`resource.getrusage`, after resetting the kernel's high-water mark where Linux allows it) minus the
RSS just before the first step.

cache: `zeroseg.teacher.cache.build_cache` on N ShapeWorld scenes written as JPEG to a temporary
folder (writing is not timed; decoding, centre-cropping, cutting views, the teacher forward and the
memmap writes are), after one discarded teacher batch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zeroseg.bench.common import (
    SCHEMA_VERSION,
    check_non_negative,
    check_positive,
    scene_images,
)
from zeroseg.bench.env import collect_env, mark_end
from zeroseg.bench.memory import MemoryProbe
from zeroseg.bench.timing import describe, rate, sample_times
from zeroseg.errors import ZerosegError
from zeroseg.utils.device import resolve_device

if TYPE_CHECKING:
    from zeroseg.model.config import StudentConfig

AMP_CHOICES: tuple[str, ...] = ("auto", "bf16", "fp16", "off")
TRAIN_WHAT = (
    "student training step (masked forward, distillation + segment matching + reconstruction losses, "
    "backward, grad-norm clipping, AdamW) on synthetic teacher targets; teacher and data loading excluded"
)


@dataclass(frozen=True)
class TrainBenchSettings:
    """One training-throughput run; embed_dim is the teacher's width (default: the preset's out_dim)."""

    preset: str = "tiny"
    batch_size: int = 32
    steps: int = 20
    warmup_steps: int = 3
    image_size: int | None = None
    embed_dim: int | None = None
    grids: tuple[int, ...] = (1, 2, 3, 4)
    match: str = "paper"
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0

    def validate(self) -> TrainBenchSettings:
        check_positive(self.batch_size, "--batch-size")
        check_positive(self.steps, "--steps")
        check_non_negative(self.warmup_steps, "--warmup-steps")
        if self.image_size is not None:
            check_positive(self.image_size, "--image-size")
        if self.embed_dim is not None:
            check_positive(self.embed_dim, "--embed-dim")
        if self.amp not in AMP_CHOICES:
            raise ZerosegError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        return self


def run_train_bench(settings: TrainBenchSettings, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time `steps` training steps after `warmup_steps` discarded ones; peak memory; images/s."""
    from zeroseg.model.student import ZeroSegStudent
    from zeroseg.preprocess import Preprocess
    from zeroseg.teacher.views import check_grids, num_views
    from zeroseg.train.losses import MATCH_MODES, LossWeights
    from zeroseg.train.runtime import build_optimizer
    from zeroseg.train.step import Objective, train_step
    from zeroseg.utils.device import amp_dtype

    s = settings.validate()
    if s.match not in MATCH_MODES:
        raise ZerosegError(f"--match must be one of {', '.join(MATCH_MODES)}, got {s.match!r}")
    grids = check_grids(s.grids)
    device = resolve_device(s.device)
    cfg = _bench_student_config(s)
    torch.manual_seed(s.seed)
    model = ZeroSegStudent(cfg).to(device).train()
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05)  # the training loop's own groups
    objective = Objective(
        preprocess=Preprocess(train_size=cfg.image_size),
        weights=LossWeights(),
        match_mode=s.match,
        amp_dtype=amp_dtype(s.amp, device),
    )
    images01, views = _bench_batch(s, cfg.image_size, num_views(grids), cfg.out_dim, device)
    env = collect_env(device)
    log(
        f"train: preset {s.preset} ({cfg.image_size} px, {cfg.out_dim}-d targets x {num_views(grids)} "
        "views), "
        f"batch {s.batch_size}, on {env['device_name']} ({device}), amp {objective.amp_dtype or 'off'}, "
        f"{env['cpu']['torch_threads']} threads"
    )

    def step() -> None:
        train_step(model, model, images01, views, objective)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    probe = MemoryProbe(device)
    probe.start()
    times = sample_times(step, device, warmup=s.warmup_steps, iters=s.steps)
    memory = probe.stop()
    stats = describe([times])
    ips = rate(s.batch_size, [times])
    log(f"  step {stats['mean_ms']:.1f} ms mean ({stats['p50_ms']:.1f} p50): {ips['mean']:.1f} images/s")
    params = sum(p.numel() for p in model.parameters())
    return {
        "schema": f"zeroseg-bench/train/v{SCHEMA_VERSION}",
        "command": "train",
        "env": mark_end(env),
        "settings": {
            **asdict(s),
            "grids": list(grids),
            "image_size": cfg.image_size,
            "embed_dim": cfg.out_dim,
            "views": num_views(grids),
            "amp_dtype": str(objective.amp_dtype).removeprefix("torch.") if objective.amp_dtype else None,
            "what": TRAIN_WHAT,
            "timing": "wall clock per step, device synchronised after each; warm-up steps discarded",
        },
        "model": {
            "parameters": params,
            "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "student": cfg.to_dict(),
        },
        "step": stats,
        "images_per_s": ips["mean"],
        "memory": memory,
    }


def _bench_student_config(s: TrainBenchSettings) -> StudentConfig:
    """The student of `s.preset`, with the image size and target dimension `s` overrides."""
    from zeroseg.model.config import student_preset

    overrides: dict[str, Any] = {}
    if s.image_size is not None:
        overrides["image_size"] = s.image_size
    if s.embed_dim is not None:
        overrides["out_dim"] = s.embed_dim
    return student_preset(s.preset, **overrides)


def _bench_batch(
    s: TrainBenchSettings, image_size: int, views: int, dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch every timed step trains on: `s.batch_size` ShapeWorld scenes as [0, 1]
    tensors and seeded random unit-norm (B, views, dim) targets standing in for teacher features."""
    from zeroseg.data.images import to_unit_tensor

    scenes = scene_images(s.batch_size, (image_size, image_size), s.seed)
    images01 = torch.stack([to_unit_tensor(img) for img in scenes]).to(device)
    gen = torch.Generator().manual_seed(s.seed)
    targets = torch.randn(s.batch_size, views, dim, generator=gen)
    return images01, torch.nn.functional.normalize(targets, dim=-1).to(
        device
    )  # unit norm, like the teacher's


@dataclass(frozen=True)
class CacheBenchSettings:
    """One teacher-cache run (teacher None: the bundled ShapeWorld teacher)."""

    teacher: str | None = None
    images: int = 64
    batch_size: int = 16
    image_size: int | None = None
    grids: tuple[int, ...] = (1, 2, 3, 4)
    dtype: str = "float16"
    workers: int = 0
    device: str = "auto"
    seed: int = 0

    def validate(self) -> CacheBenchSettings:
        check_positive(self.images, "--images")
        check_positive(self.batch_size, "--batch-size")
        check_non_negative(self.workers, "--workers")
        if self.image_size is not None:
            check_positive(self.image_size, "--image-size")
        return self


def run_cache_bench(settings: CacheBenchSettings, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Teacher-cache throughput (images/s, views/s) of `build_cache` on generated scenes."""
    from zeroseg import bundled
    from zeroseg.data.sources import ImageSource
    from zeroseg.teacher.cache import build_cache
    from zeroseg.teacher.cache_files import FEATURES, check_cache_args
    from zeroseg.teacher.load import load_teacher
    from zeroseg.teacher.views import num_views

    s = settings.validate()
    device = resolve_device(s.device)
    spec = s.teacher if s.teacher is not None else str(bundled.bundled_teacher())
    teacher = load_teacher(spec, device=device)
    size = s.image_size or teacher.image_size
    grids = check_cache_args(s.grids, size, s.dtype, s.batch_size)
    views = num_views(grids)
    amp = device.type == "cuda"  # as `zeroseg cache-teacher` does by default
    env = collect_env(device)
    log(
        f"cache: teacher {spec} ({teacher.image_size} px input, {teacher.embed_dim}-d) on "
        f"{env['device_name']} ({device}); {s.images} scenes at {size} px x {views} views, "
        f"batch {s.batch_size}"
    )
    with tempfile.TemporaryDirectory(prefix="zeroseg-bench-cache-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, img in enumerate(scene_images(s.images, (size, size), s.seed)):
            img.save(folder / f"{i:06d}.jpg", quality=95)
        source = ImageSource.open(folder)
        gen = torch.Generator().manual_seed(0)
        warm = torch.rand(min(s.batch_size, s.images), 3, size, size, generator=gen)
        teacher.encode_views(warm, grids, amp=amp)  # discarded: first-call allocations, kernel selection
        summary = build_cache(
            source, teacher, Path(tmp) / "cache", grids=grids, image_size=size, batch_size=s.batch_size,
            dtype=s.dtype, num_workers=s.workers, amp=amp, rank=0, world_size=1, progress=False,
        )  # fmt: skip
        cache_bytes = (Path(tmp) / "cache" / FEATURES).stat().st_size
    if summary.done != s.images or summary.seconds <= 0:
        raise ZerosegError(f"the cache run encoded {summary.done} of {s.images} generated images")
    images_per_s = summary.processed / summary.seconds
    log(f"  {summary.processed} images in {summary.seconds:.2f} s: {images_per_s:.1f} images/s, "
        f"{images_per_s * views:.0f} views/s")  # fmt: skip
    return {
        "schema": f"zeroseg-bench/cache/v{SCHEMA_VERSION}",
        "command": "cache",
        "env": mark_end(env),
        "settings": {
            **asdict(s),
            "teacher": spec,
            "teacher_input_size": teacher.image_size,
            "embed_dim": teacher.embed_dim,
            "image_size": size,
            "grids": list(grids),
            "views_per_image": views,
            "amp": amp,
            "what": "zeroseg.teacher.cache.build_cache end to end: JPEG decode + centre crop (DataLoader, "
            f"{s.workers} workers), grid views, teacher forward, memmap writes; one teacher batch "
            "discarded first",
        },
        "images": summary.processed,
        "seconds": summary.seconds,
        "images_per_s": images_per_s,
        "views_per_s": images_per_s * views,
        "cache_bytes": cache_bytes,
    }
