"""The one registry of model formats: what a path holds, and which runtimes can run it.

Every artefact zeroseg writes says what it is: a checkpoint's payload has `format:
zeroseg-checkpoint`, an exported bundle's `manifest.json` (or a TensorRT folder's `engine.json`) a
`format` key. `detect_format` reads that key and nothing else, so one function decides for the CLI,
`zeroseg serve`, `segment-dataset` and the bench (Ultralytics' `YOLO(path)` → AutoBackend is the
pattern). Torch-free: importing this module loads neither torch nor any runtime.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from zeroseg.errors import ZerosegError

#: The sidecar every exported bundle carries, and the one a TensorRT engine folder carries.
MANIFEST_NAME = "manifest.json"
ENGINE_JSON = "engine.json"


@dataclass(frozen=True)
class Runtime:
    """A runtime that runs one or more formats, with the keywords it understands.

    target: "module:Class" of its `SegmenterBase` (imported on first use); devices / precisions:
    what it accepts (the first is the default).
    """

    name: str
    target: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    what: str

    def check(self, *, device=None, precision: str | None = None, threads=None, short_side=None) -> None:
        """One line for a keyword this runtime cannot honour, before anything is loaded."""
        for flag, value in (("threads", threads), ("short side", short_side)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ZerosegError(f"{flag} must be a positive whole number, got {value!r}")
        if device is not None and device_type(device) not in self.devices:
            raise ZerosegError(f"the {self.name} runtime runs on {' or '.join(self.devices)}, not {device!r}")
        if precision is not None and precision not in self.precisions:
            hint = (
                "; int8 runs on onnxruntime or executorch from a bundle exported with --int8"
                if precision == "int8"
                else ""
            )
            raise ZerosegError(
                f"the {self.name} runtime runs {' | '.join(self.precisions)}, "
                f"not precision {precision!r}{hint}"
            )


def device_type(device) -> str:
    """'cuda:1' -> 'cuda'; a torch.device or an int (a CUDA index) likewise."""
    if isinstance(device, int) and not isinstance(device, bool):
        return "cuda"
    return str(getattr(device, "type", device)).split(":", 1)[0].strip().lower()


def cuda_index(device) -> int:
    """The CUDA device index of 'cuda', 'cuda:N', a torch.device or an int (default 0)."""
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    index = getattr(device, "index", None)
    if index is None and isinstance(device, str) and ":" in device:
        tail = device.split(":", 1)[1]
        if not tail.isdigit():
            raise ZerosegError(f"device {device!r} is not cuda:N with a whole-number N")
        index = int(tail)
    return int(index or 0)


@dataclass(frozen=True)
class Format:
    """One kind of artefact: its `format` key, the command that writes it and the runtimes that run it."""

    key: str
    name: str
    label: str
    command: str
    runtimes: tuple[str, ...]  # the first is the default

    @property
    def default_runtime(self) -> str:
        """The runtime `zeroseg.load` picks when none is asked for."""
        return self.runtimes[0]


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("torch", "zeroseg.infer.segmenter:Segmenter", ("cpu", "cuda"), ("fp32",),
                "PyTorch eager"),
        Runtime("onnxruntime", "zeroseg.export.onnx.runtime:OnnxSegmenter", ("cpu", "cuda"),
                ("fp32", "int8"), "ONNX Runtime (torch-free)"),
        Runtime("openvino", "zeroseg.export.openvino.runtime:OpenVINOSegmenter", ("cpu",), ("fp32",),
                "OpenVINO CPU plugin on the ONNX graph"),
        Runtime("aoti", "zeroseg.export.aoti.runtime:AOTISegmenter", ("cpu",), ("fp32",),
                "AOTInductor package (also the C++ runner's)"),
        Runtime("executorch", "zeroseg.export.executorch.runtime:ExecuTorchSegmenter", ("cpu",),
                ("fp32", "int8"), "ExecuTorch with the XNNPACK delegate (also the edge C++ runner's)"),
        Runtime("tensorrt", "zeroseg.export.tensorrt.runtime:TRTSegmenter", ("cuda",),
                ("fp32", "fp16", "int8"), "TensorRT engine"),
    )
}  # fmt: skip

FORMATS: dict[str, Format] = {
    f.key: f
    for f in (
        Format("zeroseg-checkpoint", "checkpoint", "PyTorch", "zeroseg train", ("torch",)),
        Format("zeroseg-onnx-bundle", "onnx", "ONNX", "zeroseg-export onnx", ("onnxruntime", "openvino")),
        Format("zeroseg-aoti-bundle", "aoti", "AOTInductor", "zeroseg-export aoti", ("aoti",)),
        Format(
            "zeroseg-executorch-bundle",
            "executorch",
            "ExecuTorch",
            "zeroseg-export executorch",
            ("executorch",),
        ),
        Format("zeroseg-trt-engine", "trt", "TensorRT", "zeroseg-export trt", ("tensorrt",)),
    )
}
BY_NAME: dict[str, Format] = {f.name: f for f in FORMATS.values()}
#: Exported bundle formats: `format` key -> (label, short name), what manifest checks name.
BUNDLE_KINDS: dict[str, tuple[str, str]] = {
    f.key: (f.label, f.name) for f in FORMATS.values() if f.name in ("onnx", "aoti", "executorch")
}


def _folder_format(folder: Path) -> str | None:
    """The `format` key of an exported folder (engine.json first: a TensorRT folder has both)."""
    for name in (ENGINE_JSON, MANIFEST_NAME):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return data.get("format") if isinstance(data, dict) else None
    return None


def detect_format(path: str | os.PathLike) -> Format:
    """The format of a checkpoint file or an exported folder, from the file's own `format` key.

    A file is taken for a checkpoint (its loader checks the payload and refuses anything else in one
    line, without unpickling code); a folder must carry a manifest with a known `format`.

    Raises:
        ZerosegError: the path is missing, or the folder is no zeroseg bundle.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return FORMATS["zeroseg-checkpoint"]
    if not p.exists():
        raise ZerosegError(
            f"checkpoint not found: {p} (pass a checkpoint .pt file, 'bundled' or an exported bundle folder)"
        )
    if not p.is_dir():
        raise ZerosegError(
            f"{p} is neither a file nor a folder: pass a checkpoint or an exported bundle folder"
        )
    key = _folder_format(p)
    if key not in FORMATS or key == "zeroseg-checkpoint":
        commands = "|".join(f.name for f in FORMATS.values() if f.name != "checkpoint")
        raise ZerosegError(
            f"{p} is not an exported bundle (no readable manifest.json or engine.json with a known "
            f"format): pass a checkpoint or a folder written by zeroseg-export {commands}"
        )
    return FORMATS[key]


def _noun(fmt: Format) -> str:
    return "checkpoint" if fmt.name == "checkpoint" else "bundle"


def pick_runtime(fmt: Format, runtime: str | None) -> Runtime:
    """The runtime asked for (default: the format's first), if it can run this format; else one line."""
    name = fmt.default_runtime if runtime is None else str(runtime).strip().lower()
    if name not in fmt.runtimes:
        raise ZerosegError(
            f"runtime {name!r} cannot run a {fmt.label} {_noun(fmt)}; choose one of {', '.join(fmt.runtimes)}"
        )
    return RUNTIMES[name]
