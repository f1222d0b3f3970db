"""The one dispatch point of the head ops: which backend runs a call.

`backend=None` reads `ZEROSEG_HEAD_BACKEND` (`auto` | `triton` | `vectorized` | `torch`, default
`auto`). The backends:

* `triton` — the fused Triton kernels (`zeroseg.kernels.triton_*`);
* `vectorized` — plain torch (`zeroseg.kernels.vectorized`): the reference's labels bit for bit, a
  fraction of its time; runs on any device (its fastest shortcut on CPU tensors);
* `torch` — the PyTorch reference itself (`zeroseg.kernels.reference`), the readable oracle.

`auto` runs `triton` when the tensors are on a CUDA device and triton can be imported (and is not
in interpreter mode), and `vectorized` otherwise (CPU, or CUDA without a usable Triton). `triton` on
CPU tensors works only under Triton's interpreter, which must be switched on with `TRITON_INTERPRET=1`
before triton is first imported (that is how the tests run the kernels on a machine without a GPU).

Triton is imported lazily, on the first call that needs it, so `import zeroseg.kernels` stays cheap
and a process may still set `TRITON_INTERPRET` after importing this package.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from zeroseg.errors import ZerosegError

ENV_VAR = "ZEROSEG_HEAD_BACKEND"
BACKEND_CHOICES = ("auto", "triton", "vectorized", "torch")


@functools.cache
def triton_importable() -> bool:
    """True when the `triton` package is installed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when the Triton kernels were built for the interpreter (they then run on CPU tensors)."""
    if not triton_importable():
        return False
    from zeroseg.kernels import triton_upsample

    return triton_upsample.is_interpreted()


def available_backends(device: torch.device | str | None = None) -> tuple[str, ...]:
    """Concrete backends that can run on `device` (default: CUDA when present, else CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    names = ["torch", "vectorized"]
    if triton_importable() and (device.type == "cuda" or (device.type == "cpu" and triton_interpreting())):
        names.append("triton")
    return tuple(names)


def requested_backend(backend: str | None) -> str:
    """The backend asked for: the argument, else the environment variable, else `auto`."""
    name = backend if backend is not None else (os.environ.get(ENV_VAR, "").strip() or "auto")
    name = name.lower()
    if name not in BACKEND_CHOICES:
        source = "backend=" if backend is not None else f"${ENV_VAR}"
        raise ZerosegError(
            f"unknown head backend {name!r} from {source}: use one of {', '.join(BACKEND_CHOICES)}"
        )
    return name


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Pick `"triton"`, `"vectorized"` or `"torch"` for tensors on `device`, or say why the request
    cannot be met."""
    name = requested_backend(backend)
    if name in ("torch", "vectorized"):
        return name
    if name == "auto":
        if device.type == "cuda" and triton_importable() and not triton_interpreting():
            return "triton"
        return "vectorized"
    if not triton_importable():
        raise ZerosegError(
            "head backend 'triton' needs the triton package: pip install triton, or use 'vectorized'"
        )
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu":
        if triton_interpreting():
            return "triton"
        raise ZerosegError(
            "head backend 'triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
            "before triton is first imported, move the tensors to CUDA, or use backend 'vectorized'"
        )
    raise ZerosegError(
        f"head backend 'triton' cannot run on device {device}: use CUDA tensors or 'vectorized'"
    )
