"""`zeroseg.load(path)`: the one way to get a segmenter for a checkpoint, `bundled` or any bundle.

The format comes from the artefact itself (`zeroseg.export.core.formats.detect_format`); the runtime
is the format's default unless one is asked for (an ONNX bundle runs on ONNX Runtime or OpenVINO).
Every runtime takes the same keywords — device, precision, threads, short_side — and refuses what it
cannot do in one line; an exported artefact runs the head it was exported with (its manifest's
`head`), so asking for the other one is refused before it is opened. So the CLI's `--engine`,
`zeroseg serve`, `segment-dataset` and the bench build their models here and nowhere else.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

from zeroseg.export.core.formats import Format, Runtime, detect_format, pick_runtime
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.factory import check_engine_head, head_name


def resolve(path: str | os.PathLike) -> tuple[Path, Format]:
    """(the path, its format) for `bundled`, a checkpoint file or an exported bundle folder."""
    from zeroseg.bundled import resolve_model_path

    resolved = resolve_model_path(path).expanduser()
    return resolved, detect_format(resolved)


def artefact_head(path: str | os.PathLike, fmt: Format | None = None) -> str:
    """The head an exported artefact runs ("paper" or "dense"), read from its manifest (engine.json
    for TensorRT); artefacts from before `--head` existed run the paper's."""
    path = Path(path)
    fmt = detect_format(path) if fmt is None else fmt
    if fmt.name == "trt":
        from zeroseg.export.tensorrt.manifest import read_engine_json

        return head_name(read_engine_json(path, verify_files=False).get("head", "paper"))
    from zeroseg.export.core.manifest import read_manifest

    return head_name(read_manifest(path, fmt=fmt.key).head)


def _runtime_class(rt: Runtime) -> type:
    module, _, name = rt.target.partition(":")
    return getattr(import_module(module), name)


def _torch(
    path: Path, *, device, threads: int | None, short_side: int | None, head: str | None
) -> SegmenterBase:
    """`zeroseg.Segmenter` of a checkpoint (threads: torch's intra-op count, set process-wide)."""
    from zeroseg.infer.segmenter import Segmenter
    from zeroseg.utils.device import resolve_device

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    dev = resolve_device("cpu" if device is None else device)
    return Segmenter.from_checkpoint(path, device=dev, short_side=short_side, head=head)


def load(
    path: str | os.PathLike,
    *,
    device=None,
    precision: str | None = None,
    threads: int | None = None,
    short_side: int | None = None,
    runtime: str | None = None,
    head: str | None = None,
) -> SegmenterBase:
    """The segmenter of a checkpoint, `bundled`, or a bundle written by `zeroseg-export`.

    Args:
        path: a ZeroSeg checkpoint file, `bundled` (the ShapeWorld model inside the package), or an
            exported folder (ONNX, AOTInductor, ExecuTorch, TensorRT); its format is read from the
            file itself.
        device: "cpu", "cuda" or "cuda:N" (default: the runtime's first, the CPU except TensorRT).
        precision: "fp32", "int8" (ONNX Runtime or ExecuTorch, a bundle exported with --int8), a
            TensorRT engine's own precision; default the artefact's.
        threads: intra-op threads (default: the runtime's; for PyTorch this sets torch's count).
        short_side: network input short side (default: the one the model was tuned or exported for).
        runtime: for an ONNX bundle "onnxruntime" (default) or "openvino"; other formats have one.
        head: "paper" or "dense" ("segments" is the paper's older name). A checkpoint runs either
            (default: the head it records, else paper; the bundled model records dense); an
            exported artefact runs the head it was exported with (the default),
            and asking for the other is refused in one line (re-export with --head).

    Returns:
        A `SegmenterBase`: `seg(images, classes)` gives `SegmentationResult`s on every runtime.

    Raises:
        ZerosegError: in one line, for a missing or foreign path, a tampered bundle, or an option the
            runtime cannot honour.
    """
    head = None if head is None else head_name(head)
    resolved, fmt = resolve(path)
    rt = pick_runtime(fmt, runtime)
    rt.check(device=device, precision=precision, threads=threads, short_side=short_side)
    if rt.name == "torch":
        return _torch(resolved, device=device, threads=threads, short_side=short_side, head=head)
    check_engine_head(head, artefact_head(resolved, fmt), str(resolved))
    cls = _runtime_class(rt)
    return cls(resolved, device=device, precision=precision, threads=threads, short_side=short_side)
