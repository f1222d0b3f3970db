"""`ModelSpec`: the model a scale-out job runs, small enough to ship to every Ray worker.

A spec names a ZeroSeg checkpoint (or `bundled`) or an exported ONNX bundle (`--engine`); each worker
builds its own segmenter from it (`build`), so no model is pickled. Paths are made absolute: on a
multi-node cluster they must exist on every node (shared storage or the same image).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase


@dataclass(frozen=True)
class ModelSpec:
    """A checkpoint or an ONNX bundle, with the options `zeroseg segment` takes for it."""

    checkpoint: str | None = None
    engine: str | None = None
    precision: str = "fp32"
    short_side: int | None = None
    device: str = "cpu"

    @classmethod
    def from_options(
        cls,
        checkpoint: str | os.PathLike | None,
        engine: str | os.PathLike | None,
        *,
        precision: str = "fp32",
        short_side: int | None = None,
        device: str = "cpu",
    ) -> ModelSpec:
        """The spec of `--checkpoint CKPT | --engine BUNDLE` (exactly one), paths made absolute.

        Args:
            checkpoint: a ZeroSeg checkpoint file, or `bundled`.
            engine: a folder written by `zeroseg-export onnx`.
            precision: with an engine, fp32 or int8.
            short_side: network input short side (default: the model's).
            device: with a checkpoint, where torch runs.

        Returns:
            The spec.

        Raises:
            ZerosegError: neither or both given, or the file / folder is missing.
        """
        if (checkpoint is None) == (engine is None):
            raise ZerosegError("pass exactly one of --checkpoint CKPT (or 'bundled') or --engine BUNDLE")
        if short_side is not None and short_side <= 0:
            raise ZerosegError(f"--short-side must be positive, got {short_side}")
        if engine is not None:
            path = Path(engine).expanduser()
            if not path.is_dir():
                raise ZerosegError(
                    f"--engine {path} is not a folder: pass the folder zeroseg-export onnx wrote"
                )
            if precision not in ("fp32", "int8"):
                raise ZerosegError(f"--precision must be fp32 or int8, got {precision!r}")
            return cls(engine=str(path.resolve()), precision=precision, short_side=short_side)
        if str(checkpoint) == "bundled":
            return cls(checkpoint="bundled", short_side=short_side, device=device)
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ZerosegError(f"checkpoint not found: {path} (pass a .pt file, or 'bundled')")
        return cls(checkpoint=str(path.resolve()), short_side=short_side, device=device)

    def build(self, threads: int | None = None) -> SegmenterBase:
        """The segmenter of this spec (ONNX Runtime with `threads` intra-op threads, or torch)."""
        if self.engine is not None:
            from zeroseg.export.runtime import OnnxSegmenter

            return OnnxSegmenter(
                self.engine, precision=self.precision, short_side=self.short_side, threads=threads
            )
        from zeroseg.infer.factory import build_segmenter
        from zeroseg.shapeworld.bundled import resolve_model_path

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        checkpoint = resolve_model_path(str(self.checkpoint))
        return build_segmenter(
            "zeroseg", checkpoint=checkpoint, device=self.device, short_side=self.short_side
        )

    def json_extra(self) -> dict[str, Any]:
        """The entries `zeroseg segment` adds to every per-image JSON for this model."""
        extra: dict[str, Any] = {"method": "zeroseg"}
        if self.engine is not None:
            extra.update(engine=self.engine, precision=self.precision)
        return extra

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-able fields plus the backend that runs it."""
        backend = f"onnxruntime ({self.precision})" if self.engine is not None else f"torch ({self.device})"
        return {**asdict(self), "backend": backend}
