"""`ModelSpec`: the model a scale-out job runs, small enough to ship to every Ray worker.

A spec names a ZeroSeg checkpoint (or `bundled`) or any exported bundle (`--engine`: ONNX,
AOTInductor, TensorRT); each worker builds its own segmenter from it with `zeroseg.load` (`build`),
so no model is pickled. Paths are made absolute: on a multi-node cluster they must exist on every
node (shared storage or the same image).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint or an exported bundle, with the options `zeroseg.load` takes for it."""

    checkpoint: str | None = None
    engine: str | None = None
    precision: str | None = None
    short_side: int | None = None
    device: str | None = None
    runtime: str | None = None

    @classmethod
    def from_options(
        cls,
        checkpoint: str | os.PathLike | None,
        engine: str | os.PathLike | None,
        *,
        precision: str | None = None,
        short_side: int | None = None,
        device: str | None = None,
        runtime: str | None = None,
    ) -> ModelSpec:
        """The spec of `--checkpoint CKPT | --engine BUNDLE` (exactly one), paths made absolute.

        Args:
            checkpoint: a ZeroSeg checkpoint file, or `bundled`.
            engine: a folder written by any `zeroseg-export` command (its format is read from it).
            precision: fp32 | int8 | a TensorRT engine's own (default: the model's).
            short_side: network input short side (default: the model's).
            device: where it runs (default: the CPU, or the engine's own device).
            runtime: for an ONNX bundle, onnxruntime (default) or openvino.

        Returns:
            The spec; every option is checked against the runtime here, before any worker starts.

        Raises:
            ZerosegError: neither or both given, the file / folder is missing or of no known format,
                or an option the runtime cannot honour.
        """
        from zeroseg.export.core.formats import detect_format, pick_runtime

        if (checkpoint is None) == (engine is None):
            raise ZerosegError("pass exactly one of --checkpoint CKPT (or 'bundled') or --engine BUNDLE")
        if engine is not None:
            path = Path(engine).expanduser()
            if not path.is_dir():
                raise ZerosegError(
                    f"--engine {path} is not a folder: pass the folder a zeroseg-export command wrote"
                )
        elif str(checkpoint) == "bundled":
            path = None
        else:
            path = Path(checkpoint).expanduser()
            if not path.is_file():
                raise ZerosegError(f"checkpoint not found: {path} (pass a .pt file, or 'bundled')")
        fmt = detect_format(path) if path is not None else None
        rt = pick_runtime(fmt, runtime) if fmt is not None else None
        if rt is not None:
            rt.check(device=None if device == "auto" else device, precision=precision, short_side=short_side)
        where = "bundled" if path is None else str(path.resolve())
        return cls(
            checkpoint=where if engine is None else None, engine=where if engine is not None else None,
            precision=precision, short_side=short_side, device=device, runtime=runtime,
        )  # fmt: skip

    def build(self, threads: int | None = None) -> SegmenterBase:
        """The segmenter of this spec, through `zeroseg.load` (`threads`: its intra-op threads)."""
        from zeroseg.export.loader import load

        source = self.engine if self.engine is not None else self.checkpoint
        device = self.device
        if self.engine is None:
            from zeroseg.utils.device import resolve_device

            device = resolve_device(device or "cpu")
        elif device == "auto":
            device = None
        return load(
            source, device=device, precision=self.precision, threads=threads or None,
            short_side=self.short_side, runtime=self.runtime,
        )  # fmt: skip

    def heads(self, own: str | None = None) -> tuple[str, ...]:
        """The heads this model can paint with, its default first: a checkpoint's two (the head it
        records, else the paper's, then the other), an exported engine's one (the head it was
        exported with, from its manifest). `own`: a checkpoint's default head when the caller has
        it already (its loaded segmenter's), so the checkpoint is not read twice."""
        from zeroseg.infer.factory import HEADS

        if self.engine is None:
            if own is None:
                from zeroseg.bundled import resolve_model_path
                from zeroseg.checkpoint import load_checkpoint

                ckpt = load_checkpoint(resolve_model_path(self.checkpoint), with_train_state=False)
                own = ckpt.config.default_head
            return (own, *(head for head in HEADS if head != own))
        from zeroseg.export.loader import artefact_head

        return (artefact_head(self.engine),)

    def build_heads(self, threads: int | None = None) -> dict[str, SegmenterBase]:
        """One segmenter per head of `heads()`, built once (the default head's first): a checkpoint's
        other head is a shallow copy of it with that head, sharing the model and the text cache."""
        built = self.build(threads)
        first, *others = self.heads(built.head_mode if self.engine is None else None)
        segmenters = {first: built}
        for head in others:
            segmenters[head] = copy.copy(built)
            segmenters[head].head_mode = head
        return segmenters

    def json_extra(self) -> dict[str, Any]:
        """The entries `zeroseg segment` adds to every per-image JSON for this model."""
        extra: dict[str, Any] = {"method": "zeroseg"}
        if self.engine is not None:
            extra.update(engine=self.engine, precision=self.precision or "fp32")
        return extra

    def backend(self) -> str:
        """The runtime that runs this spec and its precision or device, e.g. 'onnxruntime (int8)'."""
        from zeroseg.export.core.formats import detect_format, pick_runtime

        if self.engine is None:
            return f"torch ({self.device or 'cpu'})"
        rt = pick_runtime(detect_format(self.engine), self.runtime)
        own = "its own precision" if rt.name == "tensorrt" else rt.precisions[0]
        return f"{rt.name} ({self.precision or own})"

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-able fields plus the backend that runs it."""
        return {**asdict(self), "backend": self.backend()}
