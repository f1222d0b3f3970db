"""What a training run is: `TrainConfig` (saved in the run folder and in every checkpoint) and
`TrainResult` (what a call to `train` did)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.train.losses import MATCH_MODES
from zeroseg.utils.device import AMP_CHOICES


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
    #: decay of the exponential moving average of the weights saved in model.pt (None: no EMA; ours)
    ema: float | None = None
    #: share of the steps, from the start, whose group assignments are soft (softmax, no Gumbel noise,
    #: no argmax) before the hard ones (0 = the paper: hard from the first step; ours)
    soft_assign: float = 0.0
    #: encoder attention in windows of this many patches (`StudentConfig.attn_window`; None: full; ours)
    attn_window: int | None = None
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
        self._validate_numbers()
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
        if self.amp not in AMP_CHOICES:
            raise ZerosegError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if self.teacher is None and self.teacher_cache is None:
            raise ZerosegError("pass --teacher (encoded live) or --teacher-cache (precomputed features)")
        if self.bg_thresh is not None and not 0.0 <= self.bg_thresh <= 1.0:
            raise ZerosegError(f"--bg-thresh must be in [0, 1], got {self.bg_thresh}")
        if self.test_short_side is not None and self.test_short_side <= 0:
            raise ZerosegError(f"--test-short-side must be positive, got {self.test_short_side}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ZerosegError(f"--ema must be a decay in (0, 1) such as 0.99, got {self.ema}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ZerosegError(f"--warmup must be in [0, 1), got {self.warmup_fraction}")
        if self.attn_window is not None and self.attn_window <= 0:
            raise ZerosegError(f"--attn-window must be a positive number of patches, got {self.attn_window}")
        if not 0.0 <= self.soft_assign < 1.0:
            raise ZerosegError(
                f"--soft-assign must be a share of the steps in [0, 1), got {self.soft_assign}"
            )
        return self

    def _validate_numbers(self) -> None:
        """Every float flag finite; learning rates positive, decays and clips non-negative."""
        floats = {
            "--lr": self.lr, "--blr": self.blr, "--weight-decay": self.weight_decay,
            "--warmup": self.warmup_fraction, "--clip-grad": self.clip_grad, "--mask-ratio": self.mask_ratio,
            "--region-weight": self.region_weight, "--ema": self.ema, "--epochs": self.epochs,
            "--bg-thresh": self.bg_thresh, "--soft-assign": self.soft_assign,
        }  # fmt: skip
        for i, weight in enumerate(self.weights):
            floats[f"--loss-weights (item {i + 1})"] = weight
        for flag, value in floats.items():
            if value is not None and not math.isfinite(value):
                raise ZerosegError(f"{flag} must be a finite number, got {value}")
        for flag, value in (("--lr", self.lr), ("--blr", self.blr)):
            if value is not None and value <= 0:
                raise ZerosegError(f"{flag} must be positive, got {value}")
        for flag, value in (("--weight-decay", self.weight_decay), ("--clip-grad", self.clip_grad)):
            if value is not None and value < 0:
                raise ZerosegError(f"{flag} must not be negative, got {value}")
        for flag, number in (("--image-size", self.image_size), ("--seed", self.seed)):
            if number is not None and number < (16 if flag == "--image-size" else 0):
                raise ZerosegError(
                    f"{flag} must be {'at least 16' if flag == '--image-size' else '>= 0'}, got {number}"
                )
        if self.stop_after_steps is not None and self.stop_after_steps <= 0:
            raise ZerosegError(f"--stop-after-steps must be positive, got {self.stop_after_steps}")

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
