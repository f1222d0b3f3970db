"""Input checks of the head ops: each failure is a `ZerosegError` with a one-line message.

The checks run on shapes, dtypes and devices only (no device synchronisation), except
`check_table_fits`, which reads the min and max of a class table that the caller supplied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zeroseg.errors import ZerosegError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LABEL_DTYPES = (torch.uint8, torch.int16, torch.int32)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(t: object, name: str, ndim: int, layout: str) -> torch.Tensor:
    """`t` is a tensor of rank `ndim` (layout names its dimensions in the message)."""
    if not isinstance(t, torch.Tensor):
        raise ZerosegError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ZerosegError(f"{name} must have shape {layout} ({ndim} dims), got {_shape(t)}")
    return t


def check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ZerosegError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_same_device(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ZerosegError(
            f"{name_a} is on {a.device} but {name_b} is on {b.device}: move them to one device"
        )


def check_size(size: object) -> tuple[int, int]:
    """`size` is a pair of positive ints (H, W)."""
    ok = isinstance(size, Sequence | torch.Size) and len(size) == 2
    ok = ok and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
    if not ok or size[0] <= 0 or size[1] <= 0:
        raise ZerosegError(f"size must be a pair of positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def check_unit_interval(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ZerosegError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZerosegError(f"{name} must be an int, got {value!r}")
    return value


def check_label_dtype(out_dtype: object) -> torch.dtype:
    if out_dtype not in LABEL_DTYPES:
        raise ZerosegError(f"out_dtype must be torch.uint8, torch.int16 or torch.int32, got {out_dtype!r}")
    return out_dtype  # type: ignore[return-value]


def check_fits(lo: int, hi: int, out_dtype: torch.dtype, what: str) -> None:
    """Labels in [lo, hi] can be stored in `out_dtype`."""
    info = torch.iinfo(out_dtype)
    if lo < info.min or hi > info.max:
        raise ZerosegError(
            f"{what} span [{lo}, {hi}], which does not fit {out_dtype} [{info.min}, {info.max}]: "
            "pick a wider out_dtype"
        )


def check_similarity_inputs(tokens: object, text: object, logit_scale: object, topk: object) -> None:
    """tokens (B, N, D) and text (C, D) float on one device; logit_scale > 0 finite; 1 <= topk <= C."""
    check_tensor(tokens, "tokens", 3, "(B, N, D)")
    check_tensor(text, "text", 2, "(C, D)")
    check_float(tokens, "tokens")
    check_float(text, "text")
    check_same_device("tokens", tokens, "text", text)
    if tokens.shape[-1] != text.shape[-1]:
        raise ZerosegError(
            f"tokens {_shape(tokens)} and text {_shape(text)} disagree on the embedding size D "
            f"({tokens.shape[-1]} vs {text.shape[-1]})"
        )
    if text.shape[-1] == 0:
        raise ZerosegError("the embedding size D of tokens and text must be at least 1, got 0")
    if text.shape[0] == 0:
        raise ZerosegError("text must hold at least one class embedding, got shape (0, D)")
    bad_scale = isinstance(logit_scale, bool) or not isinstance(logit_scale, int | float)
    if bad_scale or not math.isfinite(logit_scale) or logit_scale <= 0:
        raise ZerosegError(
            f"logit_scale must be a finite number > 0 (the multiplier, e.g. 100.0), got {logit_scale!r}"
        )
    k = check_int(topk, "topk")
    if not 1 <= k <= text.shape[0]:
        raise ZerosegError(f"topk must be in [1, C={text.shape[0]}], got {k}")


def check_maps(maps: object) -> torch.Tensor:
    """maps (B, K, h, w) float with K, h, w >= 1."""
    check_tensor(maps, "maps", 4, "(B, K, h, w)")
    check_float(maps, "maps")
    if maps.shape[1] == 0 or maps.shape[2] == 0 or maps.shape[3] == 0:
        raise ZerosegError(f"maps must have K, h, w >= 1, got {_shape(maps)}")
    return maps


def check_upsample_inputs(
    maps: object, class_table: object, probs: object, size: object, bg_thresh: object, out_dtype: object
) -> tuple[tuple[int, int], float]:
    """maps (B, K, h, w) float, class_table (B, K) integer, probs (B, K) float or None, one device."""
    check_maps(maps)
    check_tensor(class_table, "class_table", 2, "(B, K)")
    if class_table.dtype.is_floating_point or class_table.dtype.is_complex or class_table.dtype == torch.bool:
        raise ZerosegError(
            f"class_table must be an integer tensor (label of each map), got {class_table.dtype}"
        )
    if tuple(class_table.shape) != tuple(maps.shape[:2]):
        raise ZerosegError(
            f"class_table {_shape(class_table)} must match maps (B, K) = {tuple(maps.shape[:2])}"
        )
    check_same_device("maps", maps, "class_table", class_table)
    if probs is not None:
        check_tensor(probs, "probs", 2, "(B, K)")
        check_float(probs, "probs")
        if tuple(probs.shape) != tuple(maps.shape[:2]):
            raise ZerosegError(f"probs {_shape(probs)} must match maps (B, K) = {tuple(maps.shape[:2])}")
        check_same_device("maps", maps, "probs", probs)
    check_label_dtype(out_dtype)
    return check_size(size), check_unit_interval(bg_thresh, "bg_thresh")
