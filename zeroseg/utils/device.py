"""Where a process runs: `--device` strings to torch devices (one resolver for every command), the
AMP dtype for a device, and joining the process group that `torchrun` describes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zeroseg.errors import ZerosegError

if TYPE_CHECKING:
    import torch

AMP_CHOICES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")


def resolve_device(name: str | torch.device, *, local_rank: int = 0) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' as a concrete device.

    Args:
        name: the user's choice; 'auto' is CUDA when available, else the CPU.
        local_rank: the GPU that plain 'cuda' means (torchrun's LOCAL_RANK).

    Returns:
        The device; CUDA without a GPU and unknown names are one-line ZerosegErrors.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    device = name.strip().lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ZerosegError("--device cuda given but no CUDA device is available: use --device cpu")
        if device == "cuda":
            device = f"cuda:{local_rank}"
    elif device != "cpu":
        raise ZerosegError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    try:
        return torch.device(device)
    except RuntimeError:  # "cuda:x"
        raise ZerosegError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp` on `device`: None (off; 'auto' off the GPU), bf16 or fp16."""
    import torch

    if amp not in AMP_CHOICES:
        raise ZerosegError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ZerosegError(f"environment variable {name} must be an integer") from None


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a `torchrun` job (rank 0 of 1 when run plainly).

    joined: this call initialised the process group (so the caller destroys it when done).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    """torchrun's LOCAL_RANK (0 when run plainly)."""
    return _env_int("LOCAL_RANK", 0)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on CUDA, gloo on the CPU."""
    import torch

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    info = DistInfo(_env_int("RANK", 0), world, local_rank())
    if torch.distributed.is_initialized():
        return info
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", device_id=device)
    else:
        torch.distributed.init_process_group("gloo")
    return DistInfo(info.rank, info.world_size, info.local_rank, joined=True)
