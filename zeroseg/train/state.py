"""A training run's live state and what is written from it: checkpoints and metrics.

`RunState` holds the student, optimizer, scheduler, EMA and the run's position; it writes `last.pt`
(resumable: RNG and data position included) and `model.pt`, and `restore_run` loads `last.pt` back
into it. `ProgressLog` writes the metrics rows (metrics.jsonl, the progress bar, the result's history).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from tqdm import tqdm

from zeroseg.checkpoint import CheckpointConfig, load_checkpoint, save_checkpoint
from zeroseg.errors import ZerosegError
from zeroseg.model.student import StudentOutput, ZeroSegStudent
from zeroseg.train.config import TrainConfig
from zeroseg.train.ema import WeightEMA
from zeroseg.train.losses import LossTerms
from zeroseg.train.resume import check_resume_steps, trim_metrics, write_run_config
from zeroseg.train.runtime import capture_rng, restore_rng
from zeroseg.train.step import groups_used
from zeroseg.train.targets import TrainingData
from zeroseg.utils.device import DistInfo


@dataclass
class RunState:
    """One run's live parts and position: what `last.pt` saves and a resume restores."""

    cfg: TrainConfig
    device: torch.device
    info: DistInfo
    data: TrainingData
    model: ZeroSegStudent
    ema: WeightEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    model_config: CheckpointConfig
    total: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    last_loss: float = float("nan")

    @property
    def run(self) -> Path:
        """The run folder."""
        return Path(self.cfg.out)

    def save(self, path: Path, *, with_state: bool, inference_only: bool = False, raw: bool = False) -> None:
        """Write a checkpoint (main process only). last.pt (`with_state`): the live weights + the
        training state; model.pt (`inference_only`): the EMA weights when --ema, unless `raw`."""
        if not self.info.is_main:
            return
        ema = self.ema
        weights = ema.shadow if ema is not None and inference_only and not raw else self.model.state_dict()
        save_checkpoint(
            path,
            config=self.model_config.replace(step=self.step),
            student=weights,
            text=self.data.text_state,
            train_state=self._train_state() if with_state else None,
            inference_only=inference_only,
        )

    def _train_state(self) -> dict[str, Any]:
        """Optimizer, scheduler, position, RNG (and EMA): what makes a resume exact."""
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": capture_rng(self.device),
        }
        if self.ema is not None:
            train_state["ema"] = self.ema.state_dict()
        return train_state


def restore_run(state: RunState, notes: list[str], on_warning: Callable[[str], None] | None) -> None:
    """Load last.pt into the run (weights, optimizer, scheduler, position, RNG, EMA), then tell the
    settings changed on resume and rewrite metrics.jsonl / config.json to match."""
    run = state.run
    last = load_checkpoint(run / "last.pt")
    if last.train_state is None:
        raise ZerosegError(f"{run / 'last.pt'} holds no training state; it cannot be resumed")
    saved = last.train_state
    state.model.load_state_dict(last.student)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step, state.epoch, state.batch_in_epoch = saved["step"], saved["epoch"], saved["batch_in_epoch"]
    check_resume_steps(state.cfg, state.step, state.total, run)
    for note in notes if on_warning is not None else ():
        on_warning(note)
    restore_rng(saved["rng"], state.device)
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    if state.info.is_main:
        trim_metrics(run, state.step)
        write_run_config(run, state.cfg)  # the adjusted settings, with this folder as `out`


@dataclass
class ProgressLog:
    """Where progress goes: the bar, metrics.jsonl (main process) and the rows kept for the result;
    plus the counters of the current logging window and the unreadable images seen so far."""

    bar: tqdm
    metrics_file: IO[str] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    unreadable: set[int] = field(default_factory=set)
    tick: float = 0.0
    images_seen: int = 0
    skipped: int = 0

    def restart_window(self) -> None:
        """Start a new throughput / skipped-images window."""
        self.tick, self.images_seen, self.skipped = time.perf_counter(), 0, 0

    def log(self, state: RunState, terms: LossTerms, out: StudentOutput) -> None:
        """Record one metrics row (history, metrics.jsonl, the bar's postfix) and restart the window."""
        elapsed = time.perf_counter() - self.tick
        row = {
            "step": state.step,
            "epoch": state.epoch,
            "loss": state.last_loss,
            "distill": terms.distill.item(),
            "match": terms.match.item(),
            "reconstruction": terms.reconstruction.item(),
            "region": terms.region.item(),
            "lr": state.scheduler.get_last_lr()[0],
            "images_per_s": self.images_seen * state.info.world_size / max(elapsed, 1e-9),
            "groups_used": groups_used(out.assignment.detach()),
            "skipped_images": self.skipped,
            "torch_threads": torch.get_num_threads(),  # floats differ between thread counts
        }
        self.history.append(row)
        if self.metrics_file:
            self.metrics_file.write(json.dumps(row) + "\n")
            self.metrics_file.flush()
        self.bar.set_postfix(
            loss=f"{state.last_loss:.4f}",
            groups=f"{row['groups_used']:.1f}",
            img_s=f"{row['images_per_s']:.1f}",
        )
        self.restart_window()


def save_final(state: RunState) -> None:
    """last.pt always; model.pt once the run is complete (and model-raw.pt, the live weights, with
    --ema, so that the average can be judged against them)."""
    state.save(state.run / "last.pt", with_state=True)
    if state.step >= state.total:
        state.save(state.run / "model.pt", with_state=False, inference_only=True)
        if state.ema is not None:
            state.save(state.run / "model-raw.pt", with_state=False, inference_only=True, raw=True)
