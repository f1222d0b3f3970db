"""Label-free ZeroSeg training: a student distilled from cached (or live) CLIP teacher features.

One loop serves a laptop CPU and a multi-node `torchrun` job: DistributedDataParallel with a
DistributedSampler, AMP (bf16 on CUDA), gradient accumulation and clipping, warm-up + cosine LR,
optional torch.compile. The run folder holds `config.json`, `metrics.jsonl`, `last.pt` (resumable:
model, optimizer, scheduler, step, RNG, data position) and, at the end, `model.pt` (inference only).
SIGINT/SIGTERM finish the current step, write `last.pt` and exit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from zeroseg.checkpoint import CheckpointConfig
from zeroseg.errors import ZerosegError
from zeroseg.model.config import StudentConfig, student_preset
from zeroseg.model.grouping import set_soft_assignment
from zeroseg.model.student import ZeroSegStudent
from zeroseg.preprocess import Preprocess
from zeroseg.teacher.views import view_patch_weights
from zeroseg.train.config import TrainConfig, TrainResult
from zeroseg.train.ema import WeightEMA
from zeroseg.train.losses import LossTerms, LossWeights
from zeroseg.train.resume import absolute_config, resume_config, write_run_config
from zeroseg.train.runtime import SkipSampler, StopFlag, build_optimizer, warmup_cosine
from zeroseg.train.state import ProgressLog, RunState, restore_run, save_final
from zeroseg.train.step import Objective, train_step
from zeroseg.train.targets import TrainingData, no_readable_image, open_training_data, skipped_images_line
from zeroseg.utils.atomic import clean_stale_temps
from zeroseg.utils.device import DistInfo, amp_dtype, init_distributed, local_rank, resolve_device
from zeroseg.utils.lock import folder_lock
from zeroseg.utils.writable import ensure_writable_dir


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
    """Set a run up (fresh or resumed) and train it; the steps below keep the order in which they
    draw random numbers, so a resumed run is bit-exact with an uninterrupted one."""
    notes: list[str] = []  # settings changed on resume: said once the resume is known to go ahead
    cfg = _resolve_config(cfg, resume, explicit, notes.append)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, local_rank=local_rank())
    info = init_distributed(device)
    data: TrainingData = open_training_data(cfg, device, student_preset(cfg.preset).image_size)
    model, student_cfg = _build_student(cfg, data, device, load_encoder=not resume)
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    eff_batch = cfg.batch_size * cfg.grad_accum * info.world_size
    lr = cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256
    optimizer = build_optimizer(model, lr=lr, weight_decay=cfg.weight_decay)
    sampler, loader = _build_loader(cfg, data, info)
    total = _total_steps(cfg, len(sampler.sampler), len(data.dataset), info.world_size)
    warmup = int(cfg.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    state = RunState(
        cfg=cfg,
        device=device,
        info=info,
        data=data,
        model=model,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        model_config=_checkpoint_config(cfg, student_cfg, data),
        total=total,
    )
    if resume:
        restore_run(state, notes, on_warning)
    elif info.is_main:
        state.run.mkdir(parents=True, exist_ok=True)
        write_run_config(state.run, cfg)
    net = _wrap(model, cfg, info, device)
    objective = _objective(cfg, student_cfg, state.model_config.preprocess, device)
    return _fit(state, net, objective, sampler, loader, progress, on_warning)


def _build_student(
    cfg: TrainConfig, data: TrainingData, device: torch.device, *, load_encoder: bool
) -> tuple[ZeroSegStudent, StudentConfig]:
    """The student of `cfg.preset`, sized to the teacher's embedding and image size, on `device`;
    its encoder starts from `cfg.encoder_weights` on a fresh run (a resume loads last.pt instead)."""
    preset_overrides: dict[str, Any] = {"out_dim": data.embed_dim, "image_size": data.image_size}
    if cfg.mask_ratio is not None:
        preset_overrides["mask_ratio"] = cfg.mask_ratio
    student_cfg = replace(
        student_preset(cfg.preset, **preset_overrides),
        norm_pix_loss=cfg.norm_pix,
        gumbel=cfg.gumbel,
        attn_window=cfg.attn_window,
    )
    model = ZeroSegStudent(student_cfg).to(device)
    if cfg.encoder_weights and load_encoder:
        model.encoder.load_pretrained(cfg.encoder_weights)
    return model, student_cfg


def _build_loader(cfg: TrainConfig, data: TrainingData, info: DistInfo) -> tuple[SkipSampler, DataLoader]:
    """This rank's shuffled share of the data (seeded, resumable mid-epoch) and its loader."""
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
    return sampler, loader


def _total_steps(cfg: TrainConfig, rank_images: int, usable_images: int, world_size: int) -> int:
    """The run's length in optimizer steps: `cfg.steps`, else `cfg.epochs` of this rank's images.

    Raises:
        ZerosegError: the data does not fill one (accumulated, all-rank) batch.
    """
    steps_per_epoch = rank_images // (cfg.batch_size * cfg.grad_accum)
    if steps_per_epoch == 0:
        raise ZerosegError(
            f"{usable_images} usable images are fewer than one batch ({cfg.batch_size} x {cfg.grad_accum}"
            f" x {world_size}); lower --batch-size or add images"
        )
    return cfg.steps or max(1, round((cfg.epochs or 1.0) * steps_per_epoch))


def _checkpoint_config(cfg: TrainConfig, student_cfg: StudentConfig, data: TrainingData) -> CheckpointConfig:
    """What every checkpoint of the run carries besides weights: the student's architecture, the
    inference preprocessing, the teacher's prompts and scale, and the training settings."""
    return CheckpointConfig(
        student=student_cfg,
        preprocess=Preprocess(train_size=student_cfg.image_size, test_short_side=cfg.test_short_side or 448),
        templates=tuple(data.templates),
        logit_scale=data.logit_scale,
        teacher=data.teacher_info,
        bg_thresh=cfg.bg_thresh,
        bg_prompt=cfg.bg_prompt,
        train=cfg.to_dict(),
    )


def _objective(
    cfg: TrainConfig, student_cfg: StudentConfig, preprocess: Preprocess, device: torch.device
) -> Objective:
    """The loss of `cfg` (weights, matching, region weights of the grid views) on `device`."""
    weights = LossWeights(*cfg.weights, region=cfg.region_weight)
    region_weights = None
    if weights.region > 0:
        region_weights = view_patch_weights(student_cfg.image_size, student_cfg.patch_size, cfg.grids)
        region_weights = region_weights.to(device)
    return Objective(
        preprocess=preprocess,
        weights=weights,
        match_mode=cfg.match,
        norm_pix=cfg.norm_pix,
        region_weights=region_weights,
        amp_dtype=amp_dtype(cfg.amp, device),
    )


def _wrap(model: ZeroSegStudent, cfg: TrainConfig, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """What runs the forward: the student, in DDP across ranks, compiled when `cfg.compile`."""
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    return net


def _fit(
    state: RunState,
    net: torch.nn.Module,
    objective: Objective,
    sampler: SkipSampler,
    loader: DataLoader,
    progress: bool,
    on_warning: Callable[[str], None] | None,
) -> TrainResult:
    """Run epochs until the run's end, `--stop-after-steps` or a signal; then write last.pt (and,
    at the end, model.pt / model-raw.pt) and report where it stopped."""
    cfg, info, run = state.cfg, state.info, state.run
    bar = tqdm(
        total=state.total,
        initial=state.step,
        disable=not (progress and info.is_main),
        desc="train",
        unit="step",
    )
    log = ProgressLog(bar=bar, metrics_file=(run / "metrics.jsonl").open("a") if info.is_main else None)
    stop_at = state.total
    if cfg.stop_after_steps is not None:
        stop_at = min(state.total, state.step + cfg.stop_after_steps)
    state.model.train()
    with StopFlag() as stop:
        while state.step < stop_at and stop.signal is None:
            sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * cfg.batch_size * cfg.grad_accum)
            good_in_epoch = _run_epoch(state, net, objective, loader, log, stop, stop_at)
            if good_in_epoch is None:  # stopped inside the epoch
                continue
            if good_in_epoch == 0 and stop.signal is None:  # a whole epoch of unreadable files
                message = no_readable_image(state.data, cfg.data)
                if message is not None:
                    bar.close()
                    raise ZerosegError(message)
            state.epoch += 1
            state.batch_in_epoch = 0
        bar.close()
        if log.unreadable and on_warning is not None:
            on_warning(skipped_images_line(state.data, cfg.data, log.unreadable))
        save_final(state)
    if log.metrics_file:
        log.metrics_file.close()
    return TrainResult(
        state.step, state.total, state.last_loss, stop.signal is not None, stop.exit_code, run, log.history
    )


def _run_epoch(
    state: RunState,
    net: torch.nn.Module,
    objective: Objective,
    loader: DataLoader,
    log: ProgressLog,
    stop: StopFlag,
    stop_at: int,
) -> int | None:
    """Train over the rest of one epoch (the sampler skips what a resumed run already saw).

    Returns:
        The number of readable images the epoch held, or None when it stopped early (the run's
        end, `--stop-after-steps` or a signal).
    """
    cfg = state.cfg
    state.optimizer.zero_grad(set_to_none=True)
    micro, good_in_epoch = 0, 0
    log.restart_window()
    for batch in loader:
        log.skipped += batch["skipped"]
        log.unreadable.update(batch["skipped_index"].tolist())
        good_in_epoch += int(batch["image"].shape[0])
        if batch["image"].shape[0] == 0:
            continue
        images01 = batch["image"].to(state.device, non_blocking=True)
        views = state.data.targets(batch, images01)
        if cfg.soft_assign:  # the paper's recipe never switches
            set_soft_assignment(state.model, state.step < round(cfg.soft_assign * state.total))
        terms, out = train_step(net, state.model, images01, views, objective, loss_scale=1 / cfg.grad_accum)
        log.images_seen += images01.shape[0]
        micro += 1
        if micro < cfg.grad_accum:
            continue
        micro = 0
        _optimizer_step(state, terms)
        log.bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == stop_at:
            log.log(state, terms, out)
        if state.step % cfg.save_every == 0:
            state.save(state.run / "last.pt", with_state=True)
        if state.step >= stop_at or stop.signal is not None:
            return None
    return good_in_epoch


def _optimizer_step(state: RunState, terms: LossTerms) -> None:
    """Clip, step the optimizer and the LR schedule, update the EMA and advance the position.

    Raises:
        ZerosegError: the loss is not finite (last.pt is written first, for a post-mortem).
    """
    cfg = state.cfg
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.model)
    state.step += 1
    state.batch_in_epoch += 1
    state.last_loss = terms.total.item()
    if not torch.isfinite(terms.total):
        state.save(state.run / "last.pt", with_state=True)
        raise ZerosegError(f"loss became {state.last_loss} at step {state.step}; lower --lr or use --amp off")
