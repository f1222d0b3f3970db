"""Label-free ZeroSeg training: a student distilled from cached (or live) CLIP teacher features.

One loop serves a laptop CPU and a multi-node `torchrun` job: DistributedDataParallel with a
DistributedSampler, AMP (bf16 on CUDA), gradient accumulation and clipping, warm-up + cosine LR,
optional torch.compile. The run folder holds `config.json`, `metrics.jsonl`, `last.pt` (resumable:
model, optimizer, scheduler, step, RNG, data position) and, at the end, `model.pt` (inference only).
SIGINT/SIGTERM finish the current step, write `last.pt` and exit.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from zeroseg.checkpoint import load_checkpoint, save_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.model.config import student_preset
from zeroseg.model.student import ZeroSegStudent
from zeroseg.preprocess import Preprocess, normalize
from zeroseg.teacher.views import view_patch_weights
from zeroseg.train.losses import MATCH_MODES, LossWeights, seen_view_weights, zeroseg_loss
from zeroseg.train.runtime import (
    DistInfo,
    SkipSampler,
    StopFlag,
    capture_rng,
    init_distributed,
    restore_rng,
    warmup_cosine,
)
from zeroseg.train.targets import TrainingData, open_training_data


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in the run folder and in checkpoints."""

    data: str
    out: str
    teacher: str | None = None
    teacher_cache: str | None = None
    preset: str = "tiny"
    image_size: int | None = None
    encoder_weights: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float | None = None
    blr: float = 1.5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.25
    clip_grad: float | None = 1.0
    mask_ratio: float | None = None
    gumbel: bool = True
    match: str = "paper"
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: weight of the region loss (zeroseg.train.losses.region_loss); 0 = the paper's losses only
    region_weight: float = 0.0
    norm_pix: bool = False
    grids: tuple[int, ...] = (1, 2, 3, 4)
    templates: str = "imagenet"
    test_short_side: int | None = None
    bg_thresh: float | None = None
    bg_prompt: bool = False
    amp: str = "auto"
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    save_every: int = 500
    stop_after_steps: int | None = None
    extra: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Refuse out-of-range values with a one-line message."""
        if self.batch_size <= 0:
            raise ZerosegError(f"--batch-size must be positive, got {self.batch_size}")
        if self.grad_accum <= 0:
            raise ZerosegError(f"--grad-accum must be positive, got {self.grad_accum}")
        if self.steps is not None and self.steps <= 0:
            raise ZerosegError(f"--steps must be positive, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ZerosegError(f"--epochs must be positive, got {self.epochs}")
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio < 1.0:
            raise ZerosegError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        if self.match not in MATCH_MODES:
            raise ZerosegError(f"--match must be one of {', '.join(MATCH_MODES)}, got {self.match!r}")
        if any(w < 0 for w in self.weights):
            raise ZerosegError(f"loss weights must be non-negative, got {self.weights}")
        if self.region_weight < 0:
            raise ZerosegError(f"--region-weight must be non-negative, got {self.region_weight}")
        if not self.grids or any(g <= 0 for g in self.grids):
            raise ZerosegError(f"--grids must be positive integers, got {self.grids}")
        if max(self.grids) < 2:
            raise ZerosegError("--grids needs at least one grid finer than 1 (segment matching uses cells)")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ZerosegError(f"--amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.teacher is None and self.teacher_cache is None:
            raise ZerosegError("pass --teacher (encoded live) or --teacher-cache (precomputed features)")
        if self.bg_thresh is not None and not 0.0 <= self.bg_thresh <= 1.0:
            raise ZerosegError(f"--bg-thresh must be in [0, 1], got {self.bg_thresh}")
        if self.test_short_side is not None and self.test_short_side <= 0:
            raise ZerosegError(f"--test-short-side must be positive, got {self.test_short_side}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ZerosegError(f"--warmup must be in [0, 1), got {self.warmup_fraction}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`."""
        values = dict(data)
        for key in ("weights", "grids"):
            values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class TrainResult:
    """What a call to `train` did."""

    step: int
    total_steps: int
    last_loss: float
    interrupted: bool
    exit_code: int
    run_dir: Path
    history: list[dict[str, Any]]


def _pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ZerosegError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def _groups_used(assignment: torch.Tensor) -> float:
    """Mean number of distinct segments that own at least one patch, per image (collapse shows here)."""
    owners = assignment.argmax(dim=-1)
    return float(torch.stack([o.unique().numel() * torch.ones(()) for o in owners]).mean())


def _build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        small = (
            param.ndim <= 1
            or name.endswith(("pos_embed", "cls_token", "mask_token"))
            or "group_tokens" in name
        )
        (no_decay if small else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _resolve_config(cfg: TrainConfig, resume: bool) -> TrainConfig:
    run = Path(cfg.out)
    if not resume:
        if (run / "last.pt").exists():
            raise ZerosegError(
                f"{run} already holds a run: pass --resume to continue it or choose another --out"
            )
        return cfg.validate()
    if not (run / "last.pt").exists():
        raise ZerosegError(f"nothing to resume in {run} (no last.pt); drop --resume to start a new run")
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    return replace(saved, steps=cfg.steps or saved.steps, stop_after_steps=cfg.stop_after_steps).validate()


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) a ZeroSeg student as `cfg` says; returns where it stopped."""
    cfg = _resolve_config(cfg, resume)
    torch.manual_seed(cfg.seed)
    info = init_distributed(
        torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    )
    device = _pick_device(cfg.device, info)
    run = Path(cfg.out)
    data: TrainingData = open_training_data(cfg, device, student_preset(cfg.preset).image_size)
    preset_overrides: dict[str, Any] = {"out_dim": data.embed_dim, "image_size": data.image_size}
    if cfg.mask_ratio is not None:
        preset_overrides["mask_ratio"] = cfg.mask_ratio
    student_cfg = replace(
        student_preset(cfg.preset, **preset_overrides), norm_pix_loss=cfg.norm_pix, gumbel=cfg.gumbel
    )
    model = ZeroSegStudent(student_cfg).to(device)
    if cfg.encoder_weights and not resume:
        model.encoder.load_pretrained(cfg.encoder_weights)
    eff_batch = cfg.batch_size * cfg.grad_accum * info.world_size
    lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256
    optimizer = _build_optimizer(model, cfg, lr)
    sampler = SkipSampler(
        DistributedSampler(
            data.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
        )
    )
    loader = DataLoader(
        data.dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=data.collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        persistent_workers=cfg.num_workers > 0,
    )
    steps_per_epoch = len(sampler.sampler) // (cfg.batch_size * cfg.grad_accum)
    if steps_per_epoch == 0:
        raise ZerosegError(
            f"{len(data.dataset)} usable images are fewer than one batch ({cfg.batch_size} x {cfg.grad_accum}"
            f" x {info.world_size}); lower --batch-size or add images"
        )
    total = cfg.steps or max(1, round((cfg.epochs or 1.0) * steps_per_epoch))
    warmup = int(cfg.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume:
        last = load_checkpoint(run / "last.pt")
        if last.train_state is None:
            raise ZerosegError(f"{run / 'last.pt'} holds no training state; it cannot be resumed")
        state = last.train_state
        model.load_state_dict(last.student)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        restore_rng(state["rng"], device)
    elif info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    amp_dtype = _amp_dtype(cfg.amp, device)
    weights = LossWeights(*cfg.weights, region=cfg.region_weight)
    region_weights = None
    if weights.region > 0:
        region_weights = view_patch_weights(student_cfg.image_size, student_cfg.patch_size, cfg.grids)
        region_weights = region_weights.to(device)
    pre = Preprocess(train_size=student_cfg.image_size, test_short_side=cfg.test_short_side or 448)
    inference_defaults: dict[str, Any] = {"bg_prompt": cfg.bg_prompt}
    if cfg.bg_thresh is not None:
        inference_defaults["bg_thresh"] = cfg.bg_thresh

    def save(path: Path, with_state: bool, inference_only: bool = False) -> None:
        if not info.is_main:
            return
        train_state = None
        if with_state:
            train_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "rng": capture_rng(device),
            }
        config = {
            "student": student_cfg.to_dict(),
            "preprocess": pre.to_dict(),
            "teacher": data.teacher_info,
            "templates": data.templates,
            "logit_scale": data.logit_scale,
            "inference": inference_defaults,
            "train": cfg.to_dict(),
            "step": step,
        }
        save_checkpoint(
            path, config=config, student=model.state_dict(), text=data.text_state, train_state=train_state,
            inference_only=inference_only,
        )  # fmt: skip

    history: list[dict[str, Any]] = []
    metrics_file = (run / "metrics.jsonl").open("a") if info.is_main else None
    bar = tqdm(total=total, initial=step, disable=not (progress and info.is_main), desc="train", unit="step")
    last_loss = float("nan")
    stop_at = total if cfg.stop_after_steps is None else min(total, step + cfg.stop_after_steps)
    model.train()
    with StopFlag() as stop:
        while step < stop_at and stop.signal is None:
            sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.batch_size * cfg.grad_accum)
            optimizer.zero_grad(set_to_none=True)
            micro = 0
            tick, images_seen, skipped = time.perf_counter(), 0, 0
            for batch in loader:
                skipped += batch["skipped"]
                if batch["image"].shape[0] == 0:
                    continue
                images01 = batch["image"].to(device, non_blocking=True)
                views = data.targets(batch, images01)
                x = normalize(images01, pre)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = net(x)
                    terms = zeroseg_loss(
                        segments=out.segments.float(),
                        z=out.z.float(),
                        views=views,
                        reconstruction=None if out.reconstruction is None else out.reconstruction.float(),
                        target_patches=model.patchify(x),
                        mask=out.mask,
                        weights=weights,
                        match_mode=cfg.match,
                        norm_pix=cfg.norm_pix,
                        assignment=out.assignment.float(),
                        view_weights=None
                        if region_weights is None
                        else seen_view_weights(region_weights, out.visible, images01.shape[0]),
                    )
                (terms.total / cfg.grad_accum).backward()
                images_seen += images01.shape[0]
                micro += 1
                if micro < cfg.grad_accum:
                    continue
                micro = 0
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                batch_in_epoch += 1
                last_loss = terms.total.item()
                if not torch.isfinite(terms.total):
                    save(run / "last.pt", with_state=True)
                    raise ZerosegError(f"loss became {last_loss} at step {step}; lower --lr or use --amp off")
                bar.update(1)
                if step % cfg.log_every == 0 or step == stop_at:
                    elapsed = time.perf_counter() - tick
                    row = {
                        "step": step,
                        "epoch": epoch,
                        "loss": last_loss,
                        "distill": terms.distill.item(),
                        "match": terms.match.item(),
                        "reconstruction": terms.reconstruction.item(),
                        "region": terms.region.item(),
                        "lr": scheduler.get_last_lr()[0],
                        "images_per_s": images_seen * info.world_size / max(elapsed, 1e-9),
                        "groups_used": _groups_used(out.assignment.detach()),
                        "skipped_images": skipped,
                    }
                    history.append(row)
                    if metrics_file:
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
                    bar.set_postfix(
                        loss=f"{last_loss:.4f}",
                        groups=f"{row['groups_used']:.1f}",
                        img_s=f"{row['images_per_s']:.1f}",
                    )
                    tick, images_seen, skipped = time.perf_counter(), 0, 0
                if step % cfg.save_every == 0:
                    save(run / "last.pt", with_state=True)
                if step >= stop_at or stop.signal is not None:
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
        bar.close()
        save(run / "last.pt", with_state=True)
        if step >= total:
            save(run / "model.pt", with_state=False, inference_only=True)
    if metrics_file:
        metrics_file.close()
    return TrainResult(step, total, last_loss, stop.signal is not None, stop.exit_code, run, history)
