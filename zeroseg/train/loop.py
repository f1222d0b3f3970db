"""Label-free ZeroSeg training: a student distilled from cached (or live) CLIP teacher features.

One loop serves a laptop CPU and a multi-node `torchrun` job: DistributedDataParallel with a
DistributedSampler, AMP (bf16 on CUDA), gradient accumulation and clipping, warm-up + cosine LR,
optional torch.compile. The run folder holds `config.json`, `metrics.jsonl`, `last.pt` (resumable:
model, optimizer, scheduler, step, RNG, data position) and, at the end, `model.pt` (inference only).
SIGINT/SIGTERM finish the current step, write `last.pt` and exit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from zeroseg.checkpoint import CheckpointConfig, load_checkpoint, save_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.model.config import student_preset
from zeroseg.model.student import StudentOutput, ZeroSegStudent
from zeroseg.preprocess import Preprocess, normalize
from zeroseg.teacher.views import view_patch_weights
from zeroseg.train.config import TrainConfig, TrainResult
from zeroseg.train.ema import WeightEMA
from zeroseg.train.losses import LossTerms, LossWeights, seen_view_weights, zeroseg_loss
from zeroseg.train.resume import (
    absolute_config,
    check_resume_steps,
    resume_config,
    trim_metrics,
    write_run_config,
)
from zeroseg.train.runtime import (
    SkipSampler,
    StopFlag,
    build_optimizer,
    capture_rng,
    restore_rng,
    warmup_cosine,
)
from zeroseg.train.targets import TrainingData, no_readable_image, open_training_data, skipped_images_line
from zeroseg.utils.atomic import clean_stale_temps
from zeroseg.utils.device import amp_dtype, init_distributed, local_rank, resolve_device
from zeroseg.utils.lock import folder_lock
from zeroseg.utils.writable import ensure_writable_dir


def _groups_used(assignment: torch.Tensor) -> float:
    """Mean number of distinct segments that own at least one patch, per image (collapse shows here)."""
    owners = assignment.argmax(dim=-1)
    return float(torch.stack([o.unique().numel() * torch.ones(()) for o in owners]).mean())


@dataclass(frozen=True)
class Objective:
    """How a batch is scored: the loss weights and options of `zeroseg_loss`, the normalisation of
    the input and the autocast dtype (None: float32)."""

    preprocess: Preprocess
    weights: LossWeights
    match_mode: str = "paper"
    norm_pix: bool = False
    region_weights: torch.Tensor | None = None  # (views, patches), `view_patch_weights`
    amp_dtype: torch.dtype | None = None


def train_step(
    net: torch.nn.Module,
    model: ZeroSegStudent,
    images01: torch.Tensor,
    views: torch.Tensor,
    objective: Objective,
    *,
    loss_scale: float = 1.0,
) -> tuple[LossTerms, StudentOutput]:
    """One forward and backward pass of a (micro-)batch; the optimizer step is the caller's.

    Args:
        net: what runs the forward (the student, or its DDP / compiled wrapper).
        model: the student itself (for `patchify`).
        images01: (B, 3, S, S) centre crops in [0, 1].
        views: (B, V, E) unit-norm teacher features of the batch's grid views.
        objective: the loss and its settings.
        loss_scale: the loss is multiplied by it before backward (1 / gradient accumulation).

    Returns:
        The loss terms (unscaled) and the student's output.
    """
    x = normalize(images01, objective.preprocess)
    amp = objective.amp_dtype
    with torch.autocast(images01.device.type, dtype=amp, enabled=amp is not None):
        out = net(x)
        view_weights = None
        if objective.region_weights is not None:
            view_weights = seen_view_weights(objective.region_weights, out.visible, images01.shape[0])
        terms = zeroseg_loss(
            segments=out.segments.float(),
            z=out.z.float(),
            views=views,
            reconstruction=None if out.reconstruction is None else out.reconstruction.float(),
            target_patches=model.patchify(x),
            mask=out.mask,
            weights=objective.weights,
            match_mode=objective.match_mode,
            norm_pix=objective.norm_pix,
            assignment=out.assignment.float(),
            view_weights=view_weights,
        )
    (terms.total * loss_scale).backward()
    return terms, out


def _resolve_config(
    cfg: TrainConfig, resume: bool, explicit: Collection[str] | None, on_note: Callable[[str], None] | None
) -> TrainConfig:
    run = Path(cfg.out)
    if not resume:
        if (run / "last.pt").exists():
            raise ZerosegError(
                f"{run} already holds a run: pass --resume to continue it or choose another --out"
            )
        return absolute_config(cfg).validate()
    if not (run / "last.pt").exists():
        raise ZerosegError(f"nothing to resume in {run} (no last.pt); drop --resume to start a new run")
    return resume_config(cfg, run, explicit, on_note)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    explicit: Collection[str] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) a ZeroSeg student as `cfg` says; one process at a time per run folder.

    Args:
        cfg: the run (data, teacher or teacher cache, preset, schedule, losses, output folder).
        resume: continue the run in `cfg.out` (always that folder, whatever its config.json says)
            from its `last.pt` (exactly: RNG and data position).
        progress: show a progress bar (main process only).
        explicit: the settings given on the command line (see `zeroseg.train.resume.resume_config`).
        on_warning: told, in one line each, about skipped images and settings changed on resume.

    Returns:
        Where it stopped: steps done, last loss, whether a signal interrupted it, the exit code.
    """
    run = Path(cfg.out)
    if local_rank() != 0 or _env_rank() != 0:
        return _train(cfg, resume, progress, explicit, on_warning)
    ensure_writable_dir(run, "--out")
    with folder_lock(run, what="run folder"):
        clean_stale_temps(run)
        return _train(cfg, resume, progress, explicit, on_warning)


def _env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _train(
    cfg: TrainConfig,
    resume: bool,
    progress: bool,
    explicit: Collection[str] | None,
    on_warning: Callable[[str], None] | None,
) -> TrainResult:
    notes: list[str] = []  # settings changed on resume: said once the resume is known to go ahead
    cfg = _resolve_config(cfg, resume, explicit, notes.append)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, local_rank=local_rank())
    info = init_distributed(device)
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
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    eff_batch = cfg.batch_size * cfg.grad_accum * info.world_size
    lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay)
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
        check_resume_steps(cfg, step, total, run)
        for note in notes if on_warning is not None else ():
            on_warning(note)
        restore_rng(state["rng"], device)
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if info.is_main:
            trim_metrics(run, step)
            write_run_config(run, cfg)  # the adjusted settings, with this folder as `out`
    elif info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_run_config(run, cfg)
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    weights = LossWeights(*cfg.weights, region=cfg.region_weight)
    region_weights = None
    if weights.region > 0:
        region_weights = view_patch_weights(student_cfg.image_size, student_cfg.patch_size, cfg.grids)
        region_weights = region_weights.to(device)
    model_config = CheckpointConfig(
        student=student_cfg,
        preprocess=Preprocess(train_size=student_cfg.image_size, test_short_side=cfg.test_short_side or 448),
        templates=tuple(data.templates),
        logit_scale=data.logit_scale,
        teacher=data.teacher_info,
        bg_thresh=cfg.bg_thresh,
        bg_prompt=cfg.bg_prompt,
        train=cfg.to_dict(),
    )
    objective = Objective(
        preprocess=model_config.preprocess,
        weights=weights,
        match_mode=cfg.match,
        norm_pix=cfg.norm_pix,
        region_weights=region_weights,
        amp_dtype=amp_dtype(cfg.amp, device),
    )

    def save(path: Path, with_state: bool, inference_only: bool = False, raw: bool = False) -> None:
        """last.pt: the live weights + the training state; model.pt: the EMA weights when --ema."""
        if not info.is_main:
            return
        weights = ema.shadow if ema is not None and inference_only and not raw else model.state_dict()
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
            if ema is not None:
                train_state["ema"] = ema.state_dict()
        save_checkpoint(
            path,
            config=model_config.replace(step=step),
            student=weights,
            text=data.text_state,
            train_state=train_state,
            inference_only=inference_only,
        )

    history: list[dict[str, Any]] = []
    metrics_file = (run / "metrics.jsonl").open("a") if info.is_main else None
    bar = tqdm(total=total, initial=step, disable=not (progress and info.is_main), desc="train", unit="step")
    last_loss = float("nan")
    stop_at = total if cfg.stop_after_steps is None else min(total, step + cfg.stop_after_steps)
    model.train()
    unreadable: set[int] = set()
    with StopFlag() as stop:
        while step < stop_at and stop.signal is None:
            sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.batch_size * cfg.grad_accum)
            optimizer.zero_grad(set_to_none=True)
            micro, good_in_epoch = 0, 0
            tick, images_seen, skipped = time.perf_counter(), 0, 0
            for batch in loader:
                skipped += batch["skipped"]
                unreadable.update(batch["skipped_index"].tolist())
                good_in_epoch += int(batch["image"].shape[0])
                if batch["image"].shape[0] == 0:
                    continue
                images01 = batch["image"].to(device, non_blocking=True)
                views = data.targets(batch, images01)
                terms, out = train_step(net, model, images01, views, objective, loss_scale=1 / cfg.grad_accum)
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
                if ema is not None:
                    ema.update(model)
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
                        "torch_threads": torch.get_num_threads(),  # floats differ between thread counts
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
                if good_in_epoch == 0 and stop.signal is None:  # a whole epoch of unreadable files
                    message = no_readable_image(data, cfg.data)
                    if message is not None:
                        bar.close()
                        raise ZerosegError(message)
                epoch += 1
                batch_in_epoch = 0
        bar.close()
        if unreadable and on_warning is not None:
            on_warning(skipped_images_line(data, cfg.data, unreadable))
        save(run / "last.pt", with_state=True)
        if step >= total:
            save(run / "model.pt", with_state=False, inference_only=True)
            if ema is not None:  # the live weights too, so that the average can be judged against them
                save(run / "model-raw.pt", with_state=False, inference_only=True, raw=True)
    if metrics_file:
        metrics_file.close()
    return TrainResult(step, total, last_loss, stop.signal is not None, stop.exit_code, run, history)
