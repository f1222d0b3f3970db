"""`engine.json`, written beside each TensorRT engine, and the checks a loader makes against it.

It records the TensorRT version, the GPU (name, compute capability), the precision, the profiles, the
compatibility flags (hardware-compatibility level, version-compatible), the sha256 of the engine, of
the ONNX graph it was built from and of the source (bundle manifest or checkpoint), the ONNX Runtime
parity of that graph, and the equivalent trtexec command. Its own sha256 is stored in it, so an
edited engine.json is refused like an edited engine. `check_compatible` is the refusal logic: plain
functions of the recorded and the current environment, so they are tested without TensorRT.

Plain Python: no TensorRT, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import BY_NAME, ENGINE_JSON
from zeroseg.export.core.manifest import sha256_file

ENGINE_FORMAT = BY_NAME["trt"].key
ENGINE_FORMAT_VERSION = 1
ENGINE_FILE = "image_encoder.engine"
_SELF_KEY = "engine_json_sha256"
HARDWARE_COMPAT = ("none", "ampere+")
#: Lowest compute capability an AMPERE_PLUS engine runs on.
AMPERE = (8, 0)


def _canonical(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != _SELF_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_engine_json(folder: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write `engine.json` (with its own checksum) into `folder`.

    Args:
        folder: the engine folder being built.
        data: the manifest body (see the module docstring).

    Returns:
        The file's path.
    """
    from zeroseg.utils.atomic import atomic_write_json

    body = {"format": ENGINE_FORMAT, "version": ENGINE_FORMAT_VERSION, **data}
    body[_SELF_KEY] = _canonical(body)
    path = Path(folder) / ENGINE_JSON
    atomic_write_json(path, body)
    return path


def read_engine_json(folder: str | os.PathLike, *, verify_files: bool = True) -> dict[str, Any]:
    """Read and check an engine folder's `engine.json`: present, ours, not newer, not edited, and
    (verify_files) the engine and graph files matching their sha256.

    Args:
        folder: the folder `zeroseg-export trt --out` wrote.
        verify_files: also hash the engine and the graph.

    Returns:
        The manifest as a dict.
    """
    folder = Path(folder)
    path = folder / ENGINE_JSON
    if not folder.is_dir():
        raise ZerosegError(f"engine folder not found: {folder} (pass the folder zeroseg-export trt wrote)")
    if not path.is_file():
        raise ZerosegError(f"{folder} has no {ENGINE_JSON}: not a zeroseg engine folder; rebuild it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZerosegError(f"{path} is not readable JSON ({type(exc).__name__}); rebuild it") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise ZerosegError(f"{path} is not a zeroseg engine manifest (format != {ENGINE_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > ENGINE_FORMAT_VERSION or version < 1:
        raise ZerosegError(f"{path} has format version {version!r}, not {ENGINE_FORMAT_VERSION}; rebuild it")
    if data.get(_SELF_KEY) != _canonical(data):
        raise ZerosegError(f"{path} was edited after the build (checksum mismatch); rebuild the engine")
    if verify_files:
        for key in ("engine", "graph"):
            entry = data.get(key)
            if entry is None:
                continue
            file = folder / entry["file"]
            if not file.is_file():
                raise ZerosegError(f"{file} is missing from the engine folder; rebuild it")
            if sha256_file(file) != entry["sha256"]:
                raise ZerosegError(f"{file} does not match its sha256 in {ENGINE_JSON} (edited or damaged)")
    return data


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_compatible(
    meta: dict[str, Any], *, tensorrt: str, gpu: str, compute_capability: tuple[int, int]
) -> None:
    """Refuse, in one line, an engine built for another TensorRT or GPU than the current ones.

    Rules (TensorRT's own; README "TensorRT"): plan files need the exact TensorRT version unless
    built version-compatible (then the same major, or a 10.x engine on 11.x, and a runtime at least
    as new); they need the same GPU model and compute capability unless built with
    --hardware-compat ampere+ (then any GPU of compute capability >= 8.0).

    Args:
        meta: the engine's `engine.json`.
        tensorrt: the installed TensorRT version (`tensorrt.__version__`).
        gpu: the current device's name.
        compute_capability: the current device's (major, minor).
    """
    if meta.get("engine") is None:
        raise ZerosegError(
            "this folder was written with --onnx-only: it holds the TensorRT-ready graph but no engine; "
            "build one with zeroseg-export trt on a GPU machine (or the trtexec command in engine.json)"
        )
    built = meta["tensorrt"]
    want, have = str(built["version"]), str(tensorrt)
    if built.get("version_compatible"):
        b, h = _version_tuple(want), _version_tuple(have)
        same_line = h[:1] == b[:1] or (b[:1] == (10,) and h[:1] == (11,))
        if not same_line or h < b:
            raise ZerosegError(
                f"the engine was built version-compatible with TensorRT {want}, which TensorRT {have} cannot "
                "run (needs the same major, or 10.x on 11.x, and a runtime at least as new); rebuild it here"
            )
    elif want != have:
        raise ZerosegError(
            f"the engine was built with TensorRT {want} but TensorRT {have} is installed: plan files need "
            "the exact version; rebuild it here (or build with --version-compatible)"
        )
    device = meta["device"]
    cc = tuple(int(v) for v in compute_capability)
    built_cc = tuple(int(v) for v in str(device["compute_capability"]).split("."))
    if built.get("hardware_compatibility") == "ampere+":
        if cc < AMPERE:
            raise ZerosegError(
                f"the engine was built for Ampere or newer GPUs (compute capability >= 8.0) but {gpu} is "
                f"{cc[0]}.{cc[1]}; rebuild it on this GPU without --hardware-compat"
            )
        return
    if cc != built_cc or gpu != device["name"]:
        raise ZerosegError(
            f"the engine was built for {device['name']} (compute capability {device['compute_capability']}), "
            f"this GPU is {gpu} ({cc[0]}.{cc[1]}); rebuild it here, or build with --hardware-compat ampere+"
        )
